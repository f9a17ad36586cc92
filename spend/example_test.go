package spend_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

// The flow of one metered streaming chat request, as the handler runs it.
func Example() {
	ledger := spend.NewLedger(spend.LedgerConfig{}) // Writer: the store in production
	defer ledger.Close(context.Background())
	max := 5 * money.USD
	ledger.Upsert(spend.Account{Kind: store.KindKey, ID: "key-1", MaxBudget: &max})

	f, _ := spend.FormatForPath("/v1/chat/completions")
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}`)
	info, err := spend.InspectRequest(f, body)
	if err != nil {
		return // 400 invalid_request_error
	}
	strip := false
	if info.Stream && !info.IncludeUsage {
		body, strip = spend.InjectIncludeUsage(body)
	}
	price, _ := spend.DefaultPrices().Lookup(info.Model)
	res, berr := ledger.Reserve("key-1", "", spend.EstimateCost(f, price, info))
	if berr != nil {
		return // 429 budget_exceeded
	}

	// ... send body upstream; a 2xx SSE answer comes back in chunks:
	upstream := "data: {\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n" +
		"data: {\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n" +
		"data: [DONE]\n\n"
	m := spend.NewStreamMeter(f, strip, info.PromptEstimate)
	var client strings.Builder
	emit := func(ev []byte) error { client.Write(ev); return nil } // write + flush
	m.Write([]byte(upstream[:50]), emit)
	m.Write([]byte(upstream[50:]), emit)
	m.Finish(emit)

	u := m.Result()
	cost := spend.Cost(f, price, u)
	ledger.Commit(res, cost, u.Model, u.TotalInputTokens(f), u.OutputTokens)

	fmt.Println("usage chunk forwarded:", strings.Contains(client.String(), "prompt_tokens"))
	fmt.Println("cost:", cost, "USD, estimated:", u.Estimated)
	fmt.Println("spend:", ledger.Spend(store.KindKey, "key-1"))
	// Output:
	// usage chunk forwarded: false
	// cost: 0.00000195 USD, estimated: false
	// spend: 0.00000195
}
