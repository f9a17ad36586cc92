package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/store"
)

// ClaimConcurrently starts one worker per entry of stores (repeat a store
// for several workers on it; pass several handles on one database to test
// instances against each other), releases them together, and has each
// call ClaimDue(now, one-hour lease, limit) until it claims nothing. It
// returns every message claimed, duplicates included. A ClaimDue error
// fails t.
func ClaimConcurrently(t testing.TB, now time.Time, limit int, stores ...store.Store) []store.OutboxMessage {
	t.Helper()
	ctx := t.Context()
	var (
		mu      sync.Mutex
		claimed []store.OutboxMessage
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				got, err := s.ClaimDue(ctx, now, time.Hour, limit)
				if err != nil {
					t.Errorf("concurrent ClaimDue: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				claimed = append(claimed, got...)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return claimed
}

// CheckClaimedOnce fails t unless claimed holds total distinct messages,
// each once, and returns how many times each ID was claimed.
func CheckClaimedOnce(t testing.TB, claimed []store.OutboxMessage, total int) map[int64]int {
	t.Helper()
	seen := map[int64]int{}
	for _, m := range claimed {
		seen[m.ID]++
	}
	if len(seen) != total {
		t.Fatalf("claimed %d distinct messages, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %d claimed %d times", id, n)
		}
	}
	return seen
}
