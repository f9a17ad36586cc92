package spend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// flakyWriter fails while failing is set.
type flakyWriter struct {
	mu      sync.Mutex
	failing bool
	applied int
}

func (w *flakyWriter) ApplySpend(_ context.Context, b store.SpendBatch) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing {
		return errors.New("store down")
	}
	w.applied++
	return nil
}

func TestWriteBehindStats(t *testing.T) {
	w := &flakyWriter{}
	l := NewLedger(LedgerConfig{Writer: w, FlushInterval: time.Hour})
	defer l.Close(context.Background())
	if s := l.WriteBehind(); s != (WriteBehindStats{}) {
		t.Fatalf("idle ledger: %+v", s)
	}
	for _, id := range []string{"k1", "k2"} {
		r, berr := l.Reserve(id, "", money.USD)
		if berr != nil {
			t.Fatal(berr)
		}
		l.Commit(r, money.USD/100, "gpt-4o", 10, 5)
	}
	if s := l.WriteBehind(); s.DirtyAccounts != 2 || s.RetryRows != 0 {
		t.Fatalf("two charged accounts: %+v", s)
	}
	w.failing = true
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("flush against a failing store succeeded")
	}
	// Two deltas and two daily rows wait for the retry.
	if s := l.WriteBehind(); s.DirtyAccounts != 0 || s.RetryRows != 4 {
		t.Fatalf("failed flush: %+v", s)
	}
	w.failing = false
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := l.WriteBehind(); s != (WriteBehindStats{}) {
		t.Fatalf("after a good flush: %+v", s)
	}
	// A flush in progress is reported as unknown rather than waited for.
	l.flushMu.Lock()
	s := l.WriteBehind()
	l.flushMu.Unlock()
	if s.RetryRows != -1 {
		t.Fatalf("during a flush: %+v", s)
	}
}
