package spend_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/sqlite"
)

// TestLedgerWithSQLite runs the write-behind against the real embedded
// store: charges, a budget reset through the store's conditional update,
// and daily history.
func TestLedgerWithSQLite(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "llmspend.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	now := time.Date(2026, 12, 4, 23, 30, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	max := 10 * money.USD
	w0 := now.Add(time.Hour)
	if err := s.CreateUser(ctx, &store.User{UserID: "u1", MaxBudget: &max, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, &store.Key{ID: "k1", Token: "tok1", UserID: "u1", MaxBudget: &max, BudgetDuration: "1h", BudgetResetAt: &w0, Spend: 500, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	k, err := s.GetKey(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.GetUser(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	l := spend.NewLedger(spend.LedgerConfig{Writer: s, Now: clock, FlushInterval: time.Hour})
	defer l.Close(ctx)
	l.Upsert(spend.Account{Kind: store.KindKey, ID: k.ID, Spend: k.Spend, MaxBudget: k.MaxBudget, BudgetDuration: k.BudgetDuration, ResetAt: k.BudgetResetAt})
	l.Upsert(spend.Account{Kind: store.KindUser, ID: u.UserID, Spend: u.Spend, MaxBudget: u.MaxBudget})

	price, _ := spend.DefaultPrices().Lookup("gpt-4o-mini")
	charge := func(in, cached, out int64) money.Pico {
		usage := spend.Usage{Model: "gpt-4o-mini", InputTokens: in, CachedInputTokens: cached, OutputTokens: out}
		r, berr := l.Reserve("k1", "u1", spend.EstimateCost(spend.OpenAIChat, price, spend.RequestInfo{PromptEstimate: in, MaxTokens: out}))
		if berr != nil {
			t.Fatal(berr)
		}
		c := spend.Cost(spend.OpenAIChat, price, usage)
		l.Commit(r, c, usage.Model, usage.TotalInputTokens(spend.OpenAIChat), out)
		return c
	}
	c1 := charge(1000, 200, 500) // 435_000_000 pico
	c2 := charge(10, 0, 10)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = s.GetKey(ctx, "k1")
	u, _ = s.GetUser(ctx, "u1")
	if k.Spend != 500+c1+c2 || u.Spend != c1+c2 {
		t.Fatalf("stored spend key %d user %d, want %d and %d", k.Spend, u.Spend, 500+c1+c2, c1+c2)
	}

	// Past the reset (and past midnight): the next charge opens a new window.
	advance(61 * time.Minute)
	c3 := charge(100, 0, 100)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = s.GetKey(ctx, "k1")
	if k.Spend != c3 || k.BudgetResetAt == nil || !k.BudgetResetAt.Equal(w0.Add(time.Hour)) {
		t.Fatalf("after reset: stored spend %d (want %d), reset at %v", k.Spend, c3, k.BudgetResetAt)
	}
	if got := l.Spend(store.KindKey, "k1"); got != c3 {
		t.Fatalf("memory spend %d, want %d", got, c3)
	}
	days, err := s.DailySpendFor(ctx, "k1", "2026-12-04", "2026-12-05")
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 2 || days[0].Spend != c1+c2 || days[0].Requests != 2 || days[0].InputTokens != 1010 ||
		days[1].Spend != c3 || days[1].Day != "2026-12-05" {
		t.Fatalf("daily history %+v", days)
	}
}
