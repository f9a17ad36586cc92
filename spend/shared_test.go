package spend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// fakeCounters is an in-memory SharedCounters with Redis's semantics as
// package cluster implements them (idempotent batches, raise-only), plus
// failure injection: down fails every call; lostReply applies a batch and
// then reports an error (the reply was lost).
type fakeCounters struct {
	mu        sync.Mutex
	c         map[SharedKey]money.Pico
	batches   map[string]bool
	down      atomic.Bool
	lostReply atomic.Int32
	calls     atomic.Int64
}

func newFakeCounters() *fakeCounters {
	return &fakeCounters{c: map[SharedKey]money.Pico{}, batches: map[string]bool{}}
}

var errDown = errors.New("connection refused")

func (f *fakeCounters) NewBatchID() string { return fmt.Sprint(rand.Uint64()) }

func (f *fakeCounters) AddRetry(_ context.Context, id string, ds []store.SpendDelta) (SharedAddResult, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return SharedAddResult{}, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res := SharedAddResult{Totals: map[SharedKey]money.Pico{}}
	fresh := !f.batches[id]
	f.batches[id] = true
	for _, d := range ds {
		k := SharedKey{d.Kind, d.ID, windowSeconds(d.Window)}
		if fresh {
			if _, ok := f.c[k]; !ok {
				res.Created = append(res.Created, k)
			}
			f.c[k] += d.Amount
		}
		res.Totals[k] = f.c[k]
	}
	if f.lostReply.Load() > 0 {
		f.lostReply.Add(-1)
		return SharedAddResult{}, errors.New("i/o timeout")
	}
	return res, nil
}

func (f *fakeCounters) Get(_ context.Context, keys []SharedKey) (map[SharedKey]money.Pico, error) {
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[SharedKey]money.Pico{}
	for _, k := range keys {
		if v, ok := f.c[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}

func (f *fakeCounters) Raise(_ context.Context, floors map[SharedKey]money.Pico) (map[SharedKey]money.Pico, error) {
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[SharedKey]money.Pico{}
	for k, v := range floors {
		if cur, ok := f.c[k]; !ok || cur < v {
			f.c[k] = v
		}
		out[k] = f.c[k]
	}
	return out, nil
}

func (f *fakeCounters) Ping(context.Context) error {
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *fakeCounters) get(kind, id string) money.Pico {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c[SharedKey{kind, id, 0}]
}

// wipe loses every counter and batch ID (Redis restarted empty).
func (f *fakeCounters) wipe() {
	f.mu.Lock()
	clear(f.c)
	clear(f.batches)
	f.mu.Unlock()
}

// durableOf reads the fake store as a DurableReader.
func durableOf(fs *fakeStore) DurableReader {
	return func(context.Context) ([]Account, error) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var out []Account
		for k, v := range fs.spend {
			kind, id, _ := strings.Cut(k, "/")
			out = append(out, Account{Kind: kind, ID: id, Spend: v, ResetAt: fs.window[k]})
		}
		return out, nil
	}
}

// clusterOf starts n ledgers sharing one store and one set of counters.
func clusterOf(t *testing.T, n int, fs *fakeStore, fc *fakeCounters) []*Ledger {
	t.Helper()
	var ls []*Ledger
	for range n {
		l := NewLedger(LedgerConfig{
			Writer: fs, Shared: fc, Durable: durableOf(fs),
			FlushInterval:  50 * time.Millisecond,
			SharedInterval: 5 * time.Millisecond,
			SharedRefresh:  50 * time.Millisecond,
		})
		t.Cleanup(func() { l.Close(context.Background()) })
		ls = append(ls, l)
	}
	return ls
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// charge runs per-ledger traffic on one key and returns the total charged.
func charge(t *testing.T, ls []*Ledger, key string, perLedger int, cost money.Pico) money.Pico {
	t.Helper()
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, l := range ls {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perLedger / 4 {
					r, berr := l.Reserve(key, "", cost)
					if berr != nil {
						continue
					}
					l.Commit(r, cost, "m", 1, 1)
					total.Add(int64(cost))
				}
			}()
		}
	}
	wg.Wait()
	return money.Pico(total.Load())
}

// allSee waits until every ledger's spend, the counter and the store all
// equal want.
func allSee(t *testing.T, ls []*Ledger, fs *fakeStore, fc *fakeCounters, key string, want money.Pico) {
	t.Helper()
	waitFor(t, "store total", func() bool { return fs.get(store.KindKey, key) == want })
	waitFor(t, "counter total", func() bool { return fc.get(store.KindKey, key) == want })
	for i, l := range ls {
		waitFor(t, fmt.Sprintf("ledger %d spend", i), func() bool { return l.Spend(store.KindKey, key) == want })
	}
}

func TestSharedTwoLedgersExactTotal(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	fs.spend["key/k1"] = 7 * money.USD
	ls := clusterOf(t, 2, fs, fc)
	for _, l := range ls {
		l.Upsert(Account{Kind: store.KindKey, ID: "k1", Spend: 7 * money.USD})
	}
	got := charge(t, ls, "k1", 2000, 3*money.USD/1000)
	allSee(t, ls, fs, fc, "k1", 7*money.USD+got)
}

// TestSharedBudgetStopsBoth: a budget is enforced on the sum of both
// ledgers' spend, overshooting by at most about one batch interval.
func TestSharedBudgetStopsBoth(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	ls := clusterOf(t, 2, fs, fc)
	for _, l := range ls {
		l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1")})
	}
	cost := money.USD / 100
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refusedSince := time.Time{}
			for {
				r, berr := l.Reserve("k", "", cost)
				if berr != nil {
					if refusedSince.IsZero() {
						refusedSince = time.Now()
					}
					if time.Since(refusedSince) > 200*time.Millisecond {
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				refusedSince = time.Time{}
				l.Commit(r, cost, "m", 1, 1)
				total.Add(int64(cost))
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	spent := money.Pico(total.Load())
	if spent < money.USD {
		t.Fatalf("stopped at %v, before the budget", spent)
	}
	// One ledger alone would stop at 1.00 + one request; two may each
	// admit one batch interval of the other's spend: at 200 µs per
	// request and 5 ms batches that is ~25 requests, bound it at 0.50.
	if spent > money.USD+money.USD/2 {
		t.Fatalf("overspent: %v for a 1.00 budget", spent)
	}
	allSee(t, ls, fs, fc, "k", spent)
	for i, l := range ls {
		if _, berr := l.Reserve("k", "", cost); berr == nil || !berr.Exhausted {
			t.Fatalf("ledger %d still admits: %v", i, berr)
		}
	}
}

// TestSharedDownAndBack: while the counters are down both ledgers keep
// serving on local counters and the store keeps every charge; once they
// are back, reconciliation makes counters and views exact.
func TestSharedDownAndBack(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	ls := clusterOf(t, 2, fs, fc)
	for _, l := range ls {
		l.Upsert(Account{Kind: store.KindKey, ID: "k"})
	}
	cost := money.USD / 1000
	total := charge(t, ls, "k", 400, cost)
	fc.down.Store(true)
	total += charge(t, ls, "k", 400, cost)
	waitFor(t, "down detected", func() bool { return ls[0].SharedDown() && ls[1].SharedDown() })
	total += charge(t, ls, "k", 400, cost)
	// The store gets everything while Redis is down.
	waitFor(t, "store total while down", func() bool { return fs.get(store.KindKey, "k") == total })
	fc.down.Store(false)
	waitFor(t, "back", func() bool { return !ls[0].SharedDown() && !ls[1].SharedDown() })
	total += charge(t, ls, "k", 400, cost)
	allSee(t, ls, fs, fc, "k", total)
}

// TestSharedLostReply: a batch that landed but whose reply was lost is
// re-sent under its ID and counted once.
func TestSharedLostReply(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	ls := clusterOf(t, 1, fs, fc)
	ls[0].Upsert(Account{Kind: store.KindKey, ID: "k"})
	fc.lostReply.Store(3)
	total := charge(t, ls, "k", 400, money.USD/1000)
	allSee(t, ls, fs, fc, "k", total)
}

// TestSharedWipe: Redis restarts empty mid-traffic; nothing is lost once
// reconciled.
func TestSharedWipe(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	fs.spend["key/k"] = money.USD
	ls := clusterOf(t, 2, fs, fc)
	for _, l := range ls {
		l.Upsert(Account{Kind: store.KindKey, ID: "k", Spend: money.USD})
	}
	cost := money.USD / 1000
	total := money.USD + charge(t, ls, "k", 400, cost)
	for range 5 {
		// Let the batches land (5 ms interval) so the wipe loses them.
		time.Sleep(30 * time.Millisecond)
		if fc.get(store.KindKey, "k") == 0 {
			t.Fatal("nothing sent to the counters")
		}
		fc.wipe()
		total += charge(t, ls, "k", 200, cost)
	}
	allSee(t, ls, fs, fc, "k", total)
}

// TestSharedCrossingFromOthers: an instance that does not charge the
// account still fires its alert when the others' spend crosses it.
func TestSharedCrossingFromOthers(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	sinks := []*sinkRec{{}, {}}
	var ls []*Ledger
	for i := range 2 {
		l := NewLedger(LedgerConfig{Writer: fs, Shared: fc, Sink: sinks[i],
			FlushInterval: 50 * time.Millisecond, SharedInterval: 5 * time.Millisecond, SharedRefresh: 20 * time.Millisecond})
		t.Cleanup(func() { l.Close(context.Background()) })
		l.Upsert(Account{Kind: store.KindKey, ID: "k", SoftBudget: pico("0.5")})
		ls = append(ls, l)
	}
	charge(t, ls[:1], "k", 600, money.USD/1000)
	waitFor(t, "crossing on the idle instance", func() bool { return sinks[1].n.Load() == 1 })
	if n := sinks[0].n.Load(); n != 1 {
		t.Fatalf("charging instance fired %d crossings", n)
	}
}

type sinkRec struct{ n atomic.Int32 }

func (s *sinkRec) Crossing(Crossing) { s.n.Add(1) }

// BenchmarkCommitShared compares Reserve+Commit with and without shared
// counters: the shared path only adds bookkeeping, no I/O.
func BenchmarkCommitShared(b *testing.B) {
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("shared=%v", shared), func(b *testing.B) {
			cfg := LedgerConfig{Writer: newFakeStore(), FlushInterval: 50 * time.Millisecond}
			if shared {
				cfg.Shared = newFakeCounters()
			}
			l := NewLedger(cfg)
			defer l.Close(context.Background())
			l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1000000")})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, _ := l.Reserve("k", "", 1)
					l.Commit(r, 1, "m", 1, 1)
				}
			})
		})
	}
}

// TestSharedDownAtStartIdle: Redis is down from the start and nothing is
// charged: the ledger notices from its failing seeds and refreshes,
// does not hammer the store with reconciles meanwhile, and seeds the
// counter from the store once Redis is back.
func TestSharedDownAtStartIdle(t *testing.T) {
	fs, fc := newFakeStore(), newFakeCounters()
	fs.spend["key/k"] = 3 * money.USD
	fc.down.Store(true)
	var reads atomic.Int32
	durable := durableOf(fs)
	l := NewLedger(LedgerConfig{Writer: fs, Shared: fc, FlushInterval: 50 * time.Millisecond,
		SharedInterval: 5 * time.Millisecond, SharedRefresh: 20 * time.Millisecond,
		Durable: func(ctx context.Context) ([]Account, error) { reads.Add(1); return durable(ctx) }})
	t.Cleanup(func() { l.Close(context.Background()) })
	l.Upsert(Account{Kind: store.KindKey, ID: "k", Spend: 3 * money.USD})
	waitFor(t, "down", l.SharedDown)
	time.Sleep(300 * time.Millisecond)
	if n := reads.Load(); n > 3 {
		t.Fatalf("%d store reads while Redis was down", n)
	}
	fc.down.Store(false)
	waitFor(t, "counter seeded from the store", func() bool { return fc.get(store.KindKey, "k") == 3*money.USD })
	if l.SharedDown() {
		t.Fatal("still down")
	}
}
