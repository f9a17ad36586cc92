package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/llmspend/llmspend/fakeupstream"
	"github.com/llmspend/llmspend/money"
)

// Reference prices from SPEC section 2, in pico-USD per token, written out
// here independently of the embedded table.
var refPrice = map[string]struct{ in, out, cacheRead, cacheWrite money.Pico }{
	"gpt-4o-mini":               {150_000, 600_000, 75_000, 0},
	"gpt-4o":                    {2_500_000, 10_000_000, 1_250_000, 0},
	"text-embedding-3-small":    {20_000, 0, 0, 0},
	"claude-3-5-haiku-20241022": {800_000, 4_000_000, 80_000, 1_000_000},
	"claude-sonnet-4-20250514":  {3_000_000, 15_000_000, 300_000, 3_750_000},
}

// openAICost: prompt tokens include the cached ones.
func openAICost(model string, u fakeupstream.Usage) money.Pico {
	p := refPrice[model]
	return money.Pico(u.InputTokens-u.CachedTokens)*p.in + money.Pico(u.CachedTokens)*p.cacheRead + money.Pico(u.OutputTokens)*p.out
}

// anthropicCost: input tokens exclude cache reads and writes.
func anthropicCost(model string, u fakeupstream.Usage) money.Pico {
	p := refPrice[model]
	return money.Pico(u.InputTokens)*p.in + money.Pico(u.CachedTokens)*p.cacheRead + money.Pico(u.CacheCreationTokens)*p.cacheWrite + money.Pico(u.OutputTokens)*p.out
}

// keySpend reads live spend from /key/info, in USD.
func (g *gateway) keySpend(key string) float64 {
	g.t.Helper()
	info := g.mustAdmin("GET", "/key/info?key="+key, nil)
	return info["info"].(map[string]any)["spend"].(float64)
}

func TestMeteringEveryEndpointExact(t *testing.T) {
	g := newGateway(t, "")
	usage := fakeupstream.Usage{InputTokens: 1000, CachedTokens: 200, CacheCreationTokens: 300, OutputTokens: 500, ReasoningTokens: 120}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Usage = usage })
	noCache := usage
	noCache.CachedTokens, noCache.CacheCreationTokens = 0, 0

	cases := []struct {
		name, path, model string
		stream, gzip      bool
		extra             string
		want              money.Pico
	}{
		{"chat", "/v1/chat/completions", "gpt-4o-mini", false, false, "", openAICost("gpt-4o-mini", usage)},
		{"chat gzip", "/v1/chat/completions", "gpt-4o", false, true, "", openAICost("gpt-4o", usage)},
		{"chat stream", "/v1/chat/completions", "gpt-4o-mini", true, false, "", openAICost("gpt-4o-mini", usage)},
		{"chat stream with usage asked", "/v1/chat/completions", "gpt-4o", true, false, `"stream_options":{"include_usage":true},`, openAICost("gpt-4o", usage)},
		{"completions", "/v1/completions", "gpt-4o-mini", false, false, "", openAICost("gpt-4o-mini", noCache)},
		{"completions stream", "/v1/completions", "gpt-4o-mini", true, false, "", openAICost("gpt-4o-mini", noCache)},
		{"embeddings", "/v1/embeddings", "text-embedding-3-small", false, false, "", money.Pico(usage.InputTokens) * refPrice["text-embedding-3-small"].in},
		{"embeddings gzip", "/embeddings", "text-embedding-3-small", false, true, "", money.Pico(usage.InputTokens) * refPrice["text-embedding-3-small"].in},
		{"responses", "/v1/responses", "gpt-4o", false, false, "", openAICost("gpt-4o", usage)},
		{"responses stream", "/v1/responses", "gpt-4o-mini", true, false, "", openAICost("gpt-4o-mini", usage)},
		{"anthropic", "/v1/messages", "claude-3-5-haiku-20241022", false, false, "", anthropicCost("claude-3-5-haiku-20241022", usage)},
		{"anthropic gzip", "/v1/messages", "claude-sonnet-4-20250514", false, true, "", anthropicCost("claude-sonnet-4-20250514", usage)},
		{"anthropic stream", "/v1/messages", "claude-sonnet-4-20250514", true, false, "", anthropicCost("claude-sonnet-4-20250514", usage)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.want <= 0 {
				t.Fatalf("bad expectation %d", c.want)
			}
			key := g.newKey(nil)
			g.upstream.Set(func(s *fakeupstream.Server) { s.Gzip = c.gzip })
			body := fmt.Sprintf(`{"model":%q,%s"stream":%v,"messages":[{"role":"user","content":"hi"}],"input":"hi","prompt":"hi","max_tokens":1000}`, c.model, c.extra, c.stream)
			r := g.do("POST", c.path, map[string]string{"Authorization": "Bearer " + key, "Accept-Encoding": "gzip"}, body)
			if r.Status != 200 {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			if !c.stream {
				hdr := r.Header.Get("x-litellm-response-cost")
				if hdr != c.want.String() {
					t.Errorf("x-litellm-response-cost = %q, want %q", hdr, c.want.String())
				}
			}
			if got := g.keySpend(key); got != c.want.USD() {
				t.Fatalf("spend = %v USD, want exactly %v (%d pico)", got, c.want.USD(), c.want)
			}
		})
	}
}

func TestUsageChunkInjectedAndStripped(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	r := g.do("POST", "/v1/chat/completions", bearer(key), `{"model":"gpt-4o-mini","stream":true,"messages":[]}`)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	// The upstream was asked for usage...
	rec := g.upstream.Received()
	if !strings.Contains(string(rec[len(rec)-1].Body), `"include_usage":true`) {
		t.Fatalf("include_usage not injected: %s", rec[len(rec)-1].Body)
	}
	// ...but the client, who did not ask, never sees the usage chunk.
	// (OpenAI then also writes "usage":null into each chunk; that is left as is.)
	if strings.Contains(string(r.Body), `"usage":{`) || strings.Contains(string(r.Body), `"choices":[]`) {
		t.Fatalf("usage chunk leaked to the client:\n%s", r.Body)
	}
	if !strings.Contains(string(r.Body), "data: [DONE]") || !strings.Contains(string(r.Body), "tok2") {
		t.Fatalf("stream damaged:\n%s", r.Body)
	}
	if g.keySpend(key) == 0 {
		t.Fatal("stream not billed")
	}
	// A client that asks for usage gets it.
	r = g.do("POST", "/v1/chat/completions", bearer(key), `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`)
	if !strings.Contains(string(r.Body), `"usage":{"prompt_tokens"`) {
		t.Fatalf("requested usage chunk missing:\n%s", r.Body)
	}
}

// The client receives each event before the upstream sends the next one.
func TestStreamingIsNotBuffered(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	gate := make(chan struct{})
	g.upstream.Set(func(s *fakeupstream.Server) { s.Gate = gate; s.Chunks = 3 })
	gateOpen := false
	defer func() {
		// Release the upstream so the test servers can shut down.
		g.upstream.Set(func(s *fakeupstream.Server) { s.Gate = nil })
		if !gateOpen {
			close(gate)
		}
	}()

	req, _ := http.NewRequest("POST", g.base+"/v1/messages", strings.NewReader(`{"model":"claude-3-5-haiku-20241022","stream":true,"max_tokens":10,"messages":[]}`))
	req.Header.Set("x-api-key", key)
	res, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	readEvent := func() string {
		t.Helper()
		done := make(chan string, 1)
		go func() {
			var ev strings.Builder
			for {
				line, err := br.ReadString('\n')
				ev.WriteString(line)
				if err != nil || line == "\n" {
					done <- ev.String()
					return
				}
			}
		}()
		select {
		case ev := <-done:
			return ev
		case <-time.After(3 * time.Second):
			t.Fatal("event not delivered while the upstream waits: the gateway buffers")
			return ""
		}
	}
	first := readEvent()
	if !strings.Contains(first, "message_start") {
		t.Fatalf("first event %q", first)
	}
	// The upstream sends the next event only when we open the gate.
	for i := 0; i < 3; i++ {
		gate <- struct{}{}
		if ev := readEvent(); !strings.Contains(ev, "event:") {
			t.Fatalf("event %d: %q", i, ev)
		}
	}
	close(gate)
	gateOpen = true
	_, _ = io.Copy(io.Discard, br)
}

func TestUpstreamErrorNotBilledAndCutStreamEstimated(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	g.upstream.Set(func(s *fakeupstream.Server) { s.Status = 500 })
	r := g.chat(key, "gpt-4o-mini")
	if r.Status != 500 || r.Header.Get("x-litellm-response-cost") != "" {
		t.Fatalf("upstream error: %d %v", r.Status, r.Header)
	}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Status = 429 })
	if r := g.do("POST", "/v1/chat/completions", bearer(key), `{"model":"gpt-4o-mini","stream":true}`); r.Status != 429 {
		t.Fatalf("stream upstream error: %d", r.Status)
	}
	time.Sleep(50 * time.Millisecond)
	if s := g.keySpend(key); s != 0 {
		t.Fatalf("upstream errors billed: %v", s)
	}

	// A stream cut before its usage event is billed from what was seen.
	g.upstream.Set(func(s *fakeupstream.Server) { s.Status = 0; s.CutStream = true })
	r = g.do("POST", "/v1/chat/completions", bearer(key), `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"`+strings.Repeat("word ", 100)+`"}]}`)
	if r.Status != 200 {
		t.Fatalf("cut stream: %d", r.Status)
	}
	if s := g.keySpend(key); s <= 0 {
		t.Fatalf("cut stream not billed: %v", s)
	}
}

func TestConcurrentSpendIsExact(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	usage := fakeupstream.Usage{InputTokens: 777, CachedTokens: 100, OutputTokens: 333}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Usage = usage; s.Record = false })
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			model := "gpt-4o-mini"
			if i%2 == 1 {
				model = "gpt-4o"
			}
			req, _ := http.NewRequest("POST", g.base+"/v1/chat/completions", strings.NewReader(`{"model":"`+model+`","messages":[]}`))
			req.Header.Set("Authorization", "Bearer "+key)
			res, err := client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				errs <- res.Status
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	want := openAICost("gpt-4o-mini", usage)*n/2 + openAICost("gpt-4o", usage)*n/2
	if got := g.keySpend(key); got != want.USD() {
		t.Fatalf("spend %v, want exactly %v", got, want.USD())
	}
	// And the write-behind puts the same exact figure in the store.
	g.restart()
	if got := g.keySpend(key); got != want.USD() {
		t.Fatalf("spend after restart %v, want exactly %v", got, want.USD())
	}
}

func TestBudgetExceededAndBoundedOvershoot(t *testing.T) {
	g := newGateway(t, "")
	// Each request costs 23*150000 + 41*600000 = 28,050,000 pico.
	per := openAICost("gpt-4o-mini", fakeupstream.Usage{InputTokens: 23, OutputTokens: 41})
	key := g.newKey(map[string]any{"key_alias": "tight", "max_budget": (per * 3).USD()})
	for i := 0; i < 3; i++ {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
	}
	r := g.chat(key, "gpt-4o-mini")
	if r.Status != 429 {
		t.Fatalf("over budget: %d %s", r.Status, r.Body)
	}
	e := errorBody(t, r)
	want := fmt.Sprintf("Budget has been exceeded! Key=tight (sk-...%s) Current cost: %s, Max budget: %s", key[len(key)-4:], (per * 3).String(), (per * 3).String())
	if e.Type != "budget_exceeded" || e.Code != "429" || e.Message != want {
		t.Fatalf("error = %+v\nwant message %q", e, want)
	}

	// Overshoot under concurrency: $0.01 budget, requests priced ~$0.0000281
	// but reserving their max_tokens worth; 200 at once cannot blow far past.
	g.upstream.Set(func(s *fakeupstream.Server) { s.Latency = 20 * time.Millisecond; s.Record = false })
	budget := money.USD / 100
	k2 := g.newKey(map[string]any{"max_budget": budget.USD()})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", g.base+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","max_tokens":400,"messages":[{"role":"user","content":"hello there"}]}`))
			req.Header.Set("Authorization", "Bearer "+k2)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			codes[res.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	spent := money.FromUSD(g.keySpend(k2))
	perGPT4o := openAICost("gpt-4o", fakeupstream.Usage{InputTokens: 23, OutputTokens: 41})
	t.Logf("codes %v, spent %s of %s", codes, spent, budget)
	if codes[429] == 0 {
		t.Fatal("no request refused")
	}
	// Bound: the budget plus one request's cost (see README).
	if spent > budget+perGPT4o {
		t.Fatalf("overshoot: spent %s with budget %s (one request costs %s)", spent, budget, perGPT4o)
	}
	if codes[200] != int(spent/perGPT4o) {
		t.Fatalf("%d requests succeeded but %s spent (%s each)", codes[200], spent, perGPT4o)
	}
}

func TestUserBudgetStopsAllItsKeys(t *testing.T) {
	g := newGateway(t, "")
	per := openAICost("gpt-4o-mini", fakeupstream.Usage{InputTokens: 23, OutputTokens: 41})
	u := g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "capped", "max_budget": (per * 2).USD(), "auto_create_key": false})
	_ = u
	k1 := g.newKey(map[string]any{"user_id": "capped"})
	k2 := g.newKey(map[string]any{"user_id": "capped"})
	if r := g.chat(k1, "gpt-4o-mini"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := g.chat(k2, "gpt-4o-mini"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	r := g.chat(k1, "gpt-4o-mini")
	if e := errorBody(t, r); r.Status != 429 || e.Type != "budget_exceeded" || !strings.Contains(e.Message, "capped") {
		t.Fatalf("user budget: %d %+v", r.Status, e)
	}
	ui := g.mustAdmin("GET", "/user/info?user_id=capped", nil)
	if got := ui["user_info"].(map[string]any)["spend"].(float64); got != (per * 2).USD() {
		t.Fatalf("user spend %v, want %v", got, (per * 2).USD())
	}
	var keys []map[string]any
	b, _ := json.Marshal(ui["keys"])
	json.Unmarshal(b, &keys)
	if len(keys) != 2 || keys[0]["spend"].(float64)+keys[1]["spend"].(float64) != (per*2).USD() {
		t.Fatalf("key spends: %v", keys)
	}
}

func TestCustomPricesAndUnknownModel(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/prices.json"
	if err := os.WriteFile(file, []byte(`{"house-model": {"input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06, "litellm_provider": "openai", "mode": "chat"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, "prices_file "+file+"\n\t\tprice my-model {\n\t\t\tinput 1\n\t\t\toutput 2.5\n\t\t}\n\t\tprice gpt-4o-mini {\n\t\t\tinput 0.30\n\t\t\toutput 1.20\n\t\t}")
	key := g.newKey(nil)
	cases := []struct {
		model string
		want  money.Pico
	}{
		{"my-model", 23*1_000_000 + 41*2_500_000},
		{"house-model", 23*2_000_000 + 41*4_000_000},
		{"gpt-4o-mini", 23*300_000 + 41*1_200_000}, // the Caddyfile replaces the table's price
		{"no-such-model", 0},                       // served, spend 0
	}
	var total money.Pico
	for _, c := range cases {
		r := g.chat(key, c.model)
		if r.Status != 200 {
			t.Fatalf("%s: %d", c.model, r.Status)
		}
		if got := r.Header.Get("x-litellm-response-cost"); got != c.want.String() {
			t.Errorf("%s: cost header %q, want %q", c.model, got, c.want.String())
		}
		total += c.want
	}
	if got := g.keySpend(key); got != total.USD() {
		t.Fatalf("spend %v, want %v", got, total.USD())
	}
	// A bad price is a Caddyfile error with its line.
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n\tllm_spend {\n\t\tprice m {\n\t\t\tinput cheap\n\t\t}\n\t}\n}\n:4000\n"), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:4") {
		t.Fatalf("bad price: %v", err)
	}
}

// Malformed upstream output never breaks the gateway: it reaches the client
// byte for byte and nothing is billed for it beyond what can be read.
func TestMalformedUpstreamPassesThrough(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	cases := []struct {
		name, ctype, body, req string
	}{
		{"broken json", "application/json", `{"id":"x","usage":{"prompt_tokens": 12, "completion_tok`, `{"model":"gpt-4o-mini"}`},
		{"not json", "application/json", "\x00\xffgarbage\n", `{"model":"gpt-4o-mini"}`},
		{"broken sse", "text/event-stream", "data: {\"choices\":[{\"delta\"\n\ndata: [DONE\r\n\r\nevent: x\ndata: {\"usage\":{\"prompt_tokens\":\"many\"}}\n\n", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}`},
		{"sse without blank line", "text/event-stream", "data: {\"usage\":{\"prompt_tokens\":5", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g.upstream.Set(func(s *fakeupstream.Server) { s.Raw, s.RawContentType = []byte(c.body), c.ctype })
			r := g.do("POST", "/v1/chat/completions", bearer(key), c.req)
			if r.Status != 200 || string(r.Body) != c.body {
				t.Fatalf("status %d, body %q, want %q", r.Status, r.Body, c.body)
			}
		})
	}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Raw = nil })
	// The gateway still works afterwards.
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("after garbage: %d", r.Status)
	}
}

// last_used_at follows traffic, written behind with the spend.
func TestLastUsedAt(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(nil)
	info := g.mustAdmin("GET", "/key/info?key="+key, nil)["info"].(map[string]any)
	if info["last_used_at"] != nil {
		t.Fatalf("unused key has last_used_at %v", info["last_used_at"])
	}
	before := time.Now().Add(-time.Second)
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	waitUntil(t, func() bool {
		info = g.mustAdmin("GET", "/key/info?key="+key, nil)["info"].(map[string]any)
		return info["last_used_at"] != nil
	})
	at, err := time.Parse(time.RFC3339Nano, info["last_used_at"].(string))
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Fatalf("last_used_at %v (%v)", info["last_used_at"], err)
	}
}
