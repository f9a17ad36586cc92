package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/store"
)

// BenchEnqueue measures Enqueue of a typical notification (a few KB of
// HTML and text), each with a new idempotency key. s must be empty.
func BenchEnqueue(b *testing.B, s store.Store) {
	ctx := b.Context()
	m := &store.OutboxMessage{Kind: "key_created", To: []string{"a@example.com"}, Subject: "LiteLLM: API Key Created",
		HTML: strings.Repeat("<p>hello</p>", 200), Text: strings.Repeat("hello ", 200)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.IdempotencyKey = fmt.Sprintf("bench-%d", i)
		if _, err := s.Enqueue(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchApplySpend measures one write-behind flush of 100 deltas (50 keys,
// 50 users) plus their 50 daily rows. s must be empty.
func BenchApplySpend(b *testing.B, s store.Store) {
	ctx := b.Context()
	w := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var batch store.SpendBatch
	for i := range 50 {
		id := fmt.Sprintf("k%d", i)
		if err := s.CreateKey(ctx, &store.Key{ID: id, Token: "t" + id, BudgetResetAt: &w}); err != nil {
			b.Fatal(err)
		}
		uid := fmt.Sprintf("u%d", i)
		if err := s.CreateUser(ctx, &store.User{UserID: uid}); err != nil {
			b.Fatal(err)
		}
		batch.Deltas = append(batch.Deltas,
			store.SpendDelta{Kind: store.KindKey, ID: id, Window: &w, Amount: 1234},
			store.SpendDelta{Kind: store.KindUser, ID: uid, Amount: 1234})
		batch.Daily = append(batch.Daily, store.DailySpend{KeyID: id, Model: "gpt-4o", Day: "2026-04-30",
			Spend: 1234, InputTokens: 100, OutputTokens: 20, Requests: 1})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.ApplySpend(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	k, err := s.GetKey(ctx, "k0")
	if err != nil || k.Spend == 0 {
		b.Fatalf("spend not applied: %+v %v", k, err)
	}
}
