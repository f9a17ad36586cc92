package sqlite

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/storetest"
)

func openTemp(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "sub", "dir", "llmspend.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "llmspend.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w := time.Date(2026, 5, 1, 0, 0, 0, 1, time.UTC)
	k := &store.Key{ID: "k1", Token: "tok", KeyAlias: "a", BudgetResetAt: &w, Metadata: map[string]any{"x": "y"}}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{{Kind: store.KindKey, ID: "k1", Window: &w, Amount: 5 * money.USD}},
		Daily:  []store.DailySpend{{KeyID: "k1", Model: "m", Day: "2026-04-30", Spend: 5 * money.USD, Requests: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	id, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: "i1", To: []string{"a@b.c"}, Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetKeyByToken(ctx, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spend != 5*money.USD || got.BudgetResetAt == nil || !got.BudgetResetAt.Equal(w) || got.Metadata["x"] != "y" {
		t.Fatalf("reopened key = %+v", got)
	}
	d, err := s.DailySpendFor(ctx, "k1", "2026-04-30", "2026-04-30")
	if err != nil || len(d) != 1 || d[0].Spend != 5*money.USD {
		t.Fatalf("reopened daily = %+v, %v", d, err)
	}
	m, err := s.GetMessage(ctx, id)
	if err != nil || m.Subject != "s" || m.Status != store.StatusPending {
		t.Fatalf("reopened message = %+v, %v", m, err)
	}
	// IDs are never reused, even after the newest message is gone
	// (AUTOINCREMENT), so Message-IDs stay unique.
	id2, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: "i2"})
	if err != nil || id2 <= id {
		t.Fatalf("second id %d after %d, %v", id2, id, err)
	}
}

func TestSchema(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Fatalf("schema version %d, want %d", v, len(migrations))
	}
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	var fk, sync, busy int
	if err := s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys = %d, %v", fk, err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil || sync != 1 {
		t.Fatalf("synchronous = %d, %v (want 1, NORMAL)", sync, err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != busyTimeoutMS {
		t.Fatalf("busy_timeout = %d, %v", busy, err)
	}
	// The read pool really is read-only.
	if _, err := s.r.ExecContext(ctx, `DELETE FROM keys`); err == nil {
		t.Fatal("read pool accepted a write")
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llmspend.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("opened a database with a newer schema")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("unexpected error: %v", err)
	}
}

func TestOpenPathAndMode(t *testing.T) {
	// Characters a URI would treat specially are fine in a plain path.
	path := filepath.Join(t.TempDir(), "dir with space#x", "llm spend%20.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(t.Context(), &store.User{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("database mode %v, want private", fi.Mode().Perm())
	}
	if s.Path() != path {
		t.Errorf("Path() = %q", s.Path())
	}
}

func TestOpenErrors(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", filepath.Join(t.TempDir(), "a?b.db")} {
		if s, err := Open(p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
	// Parent is a file: cannot create the directory.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(filepath.Join(f, "db")); err == nil {
		s.Close()
		t.Error("Open under a regular file succeeded")
	}
}

// TestTwoHandlesOneFile covers a Caddy config reload: the new app opens the
// file while the old one still writes to it.
func TestTwoHandlesOneFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "llmspend.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 100; i++ {
		if _, err := a.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	claimed := storetest.ClaimConcurrently(t, time.Now().Add(time.Second), 3, a, b, a, b)
	storetest.CheckClaimedOnce(t, claimed, 100)
}

func BenchmarkEnqueue(b *testing.B) { storetest.BenchEnqueue(b, openTemp(b)) }

// BenchmarkApplySpend: see storetest.BenchApplySpend.
func BenchmarkApplySpend(b *testing.B) { storetest.BenchApplySpend(b, openTemp(b)) }
