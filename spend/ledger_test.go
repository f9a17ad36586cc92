package spend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// fakeStore applies batches with the semantics documented on store.SpendDelta
// and store.SpendReset. deltasFirst applies a batch's deltas before its
// resets: the adversarial order for the ledger.
type fakeStore struct {
	mu          sync.Mutex
	failNext    int
	deltasFirst bool
	spend       map[string]money.Pico
	window      map[string]*time.Time
	daily       map[string]store.DailySpend
	batches     []store.SpendBatch
}

func newFakeStore() *fakeStore {
	return &fakeStore{spend: map[string]money.Pico{}, window: map[string]*time.Time{}, daily: map[string]store.DailySpend{}}
}

func sameWindow(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func (f *fakeStore) ApplySpend(ctx context.Context, b store.SpendBatch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return errors.New("database is down")
	}
	f.batches = append(f.batches, b)
	deltas := func() {
		for _, d := range b.Deltas {
			k := d.Kind + "/" + d.ID
			if sameWindow(f.window[k], d.Window) {
				f.spend[k] += d.Amount
			}
		}
	}
	if f.deltasFirst {
		deltas()
	}
	for _, r := range b.Resets {
		k := r.Kind + "/" + r.ID
		if sameWindow(f.window[k], r.From) {
			to := r.To
			f.window[k] = &to
			f.spend[k] = 0
		}
	}
	if !f.deltasFirst {
		deltas()
	}
	for _, d := range b.Daily {
		k := d.KeyID + "/" + d.Model + "/" + d.Day
		o := f.daily[k]
		o.KeyID, o.Model, o.Day = d.KeyID, d.Model, d.Day
		o.Spend += d.Spend
		o.InputTokens += d.InputTokens
		o.OutputTokens += d.OutputTokens
		o.Requests += d.Requests
		f.daily[k] = o
	}
	return nil
}

func (f *fakeStore) get(kind, id string) money.Pico {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spend[kind+"/"+id]
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func pico(usd string) *money.Pico {
	p, err := money.ParseUSD(usd)
	if err != nil {
		panic(err)
	}
	return &p
}

func newTestLedger(t *testing.T, cfg LedgerConfig) *Ledger {
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Hour // tests flush by hand
	}
	l := NewLedger(cfg)
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func TestLedgerConcurrentCommitsExact(t *testing.T) {
	fs := newFakeStore()
	l := newTestLedger(t, LedgerConfig{Writer: fs, FlushInterval: 5 * time.Millisecond})
	const keys, users = 10, 3
	for i := 0; i < keys; i++ {
		l.Upsert(Account{Kind: store.KindKey, ID: fmt.Sprint("k", i), Spend: 1000})
	}
	var want [keys]atomic.Int64
	var wantUser [users]atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 100; i++ {
				k, u := r.IntN(keys), r.IntN(users)
				res, berr := l.Reserve(fmt.Sprint("k", k), fmt.Sprint("u", u), money.Pico(r.Int64N(1e9)))
				if berr != nil {
					t.Error(berr)
					return
				}
				cost := money.Pico(r.Int64N(1e10))
				if r.IntN(10) == 0 {
					l.Release(res)
					continue
				}
				l.Commit(res, cost, "gpt-4o-mini", 10, 5)
				want[k].Add(int64(cost))
				wantUser[u].Add(int64(cost))
			}
		}(g)
	}
	wg.Wait()
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var total, daily int64
	for i := 0; i < keys; i++ {
		id := fmt.Sprint("k", i)
		if got := l.Spend(store.KindKey, id); int64(got) != 1000+want[i].Load() {
			t.Errorf("key %s: spend %d, want %d", id, got, 1000+want[i].Load())
		}
		// The store got the deltas exactly once (it was seeded at 0 here, the
		// ledger at 1000).
		if got := fs.get(store.KindKey, id); int64(got) != want[i].Load() {
			t.Errorf("key %s: stored %d, want %d", id, got, want[i].Load())
		}
		if s, _ := l.Snapshot(store.KindKey, id); s.InFlight != 0 || s.Reserved != 0 {
			t.Errorf("key %s: leftover reservation %+v", id, s)
		}
		total += want[i].Load()
	}
	for i := 0; i < users; i++ {
		id := fmt.Sprint("u", i)
		if got := l.Spend(store.KindUser, id); int64(got) != wantUser[i].Load() {
			t.Errorf("user %s: spend %d, want %d", id, got, wantUser[i].Load())
		}
	}
	for _, d := range fs.daily {
		daily += int64(d.Spend)
	}
	if daily != total {
		t.Errorf("daily aggregates %d, want %d", daily, total)
	}
}

func TestLedgerOvershootBound(t *testing.T) {
	l := newTestLedger(t, LedgerConfig{})
	// $0.01 left on a $5 budget; each request estimates and costs $0.002.
	l.Upsert(Account{Kind: store.KindKey, ID: "k", Spend: *pico("4.99"), MaxBudget: pico("5")})
	est := *pico("0.002")
	var admitted atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	reservations := make(chan Reservation, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, berr := l.Reserve("k", "", est)
			if berr != nil {
				if berr.Kind != store.KindKey || berr.ID != "k" || berr.MaxBudget != *pico("5") {
					t.Errorf("BudgetError = %+v", berr)
				}
				return
			}
			admitted.Add(1)
			reservations <- r
		}()
	}
	close(start)
	wg.Wait()
	close(reservations)
	// All 200 are in flight together: only what fits the $0.01 is admitted.
	if n := admitted.Load(); n != 5 {
		t.Fatalf("admitted %d concurrent requests, want 5 ($0.01 / $0.002)", n)
	}
	for r := range reservations {
		l.Commit(r, est, "m", 1, 1)
	}
	if got := l.Spend(store.KindKey, "k"); got != *pico("5") {
		t.Fatalf("spend %s, want 5", got)
	}
	if _, berr := l.Reserve("k", "", 0); berr == nil || !berr.Exhausted {
		t.Fatalf("exhausted key admitted: %+v", berr)
	}

	// A request larger than what is left is admitted when nothing is in
	// flight (at most one beyond), refused when something is.
	l.Upsert(Account{Kind: store.KindKey, ID: "k2", Spend: *pico("0.99"), MaxBudget: pico("1")})
	r1, berr := l.Reserve("k2", "", *pico("0.5"))
	if berr != nil {
		t.Fatalf("first request refused: %v", berr)
	}
	if _, berr := l.Reserve("k2", "", *pico("0.5")); berr == nil || berr.Exhausted || berr.Reserved != *pico("0.5") {
		t.Fatalf("second concurrent request: %+v", berr)
	}
	l.Commit(r1, *pico("0.3"), "m", 1, 1)
	if s := l.Spend(store.KindKey, "k2"); s != *pico("1.29") {
		t.Fatalf("spend %s", s)
	}
	if _, berr := l.Reserve("k2", "", 0); berr == nil || berr.Error() != "Budget has been exceeded! Current cost: 1.29, Max budget: 1" {
		t.Fatalf("BudgetError = %v", berr)
	}
}

func TestLedgerUserBudget(t *testing.T) {
	l := newTestLedger(t, LedgerConfig{})
	l.Upsert(Account{Kind: store.KindUser, ID: "u", Spend: *pico("2"), MaxBudget: pico("2")})
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("100")})
	_, berr := l.Reserve("k", "u", 1)
	if berr == nil || berr.Kind != store.KindUser || berr.ID != "u" || !berr.Exhausted {
		t.Fatalf("user budget not enforced: %+v", berr)
	}
	if s, _ := l.Snapshot(store.KindKey, "k"); s.InFlight != 0 {
		t.Fatalf("refused request left a reservation on the key: %+v", s)
	}
	// Unknown ids are served unbudgeted and still metered.
	r, berr := l.Reserve("new-key", "", 5)
	if berr != nil {
		t.Fatal(berr)
	}
	l.Commit(r, 7, "m", 0, 0)
	l.Upsert(Account{Kind: store.KindKey, ID: "new-key", Spend: 100, MaxBudget: pico("1")})
	if got := l.Spend(store.KindKey, "new-key"); got != 107 {
		t.Fatalf("late-seeded spend = %d, want 100 (store) + 7 (unflushed)", got)
	}
	// Later upserts keep memory's spend.
	l.Upsert(Account{Kind: store.KindKey, ID: "new-key", Spend: 0, MaxBudget: pico("1")})
	if got := l.Spend(store.KindKey, "new-key"); got != 107 {
		t.Fatalf("re-upsert overwrote spend: %d", got)
	}
	l.Remove(store.KindKey, "new-key")
	if _, ok := l.Snapshot(store.KindKey, "new-key"); ok {
		t.Fatal("removed account still present")
	}
}

func TestLedgerCrossingsOnceUnderConcurrency(t *testing.T) {
	sink := &RecordingSink{}
	l := newTestLedger(t, LedgerConfig{Sink: sink})
	l.Upsert(Account{Kind: store.KindKey, ID: "def", MaxBudget: pico("1"), SoftBudget: pico("0.5")})
	l.Upsert(Account{Kind: store.KindKey, ID: "custom", MaxBudget: pico("1"), AlertPercents: []int{100, 50, 75, 0, 250, 50}})
	l.Upsert(Account{Kind: store.KindUser, ID: "u", MaxBudget: pico("2.5")})
	var wg sync.WaitGroup
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			key := "def"
			if g%2 == 1 {
				key = "custom"
			}
			for i := 0; i < 2; i++ {
				r, berr := l.Reserve(key, "u", *pico("0.01"))
				if berr != nil {
					continue
				}
				l.Commit(r, *pico("0.01"), "m", 1, 1)
			}
		}(g)
	}
	wg.Wait()
	for _, c := range []struct {
		kind, id, typ string
		pct           int
	}{
		{store.KindKey, "def", AlertSoftBudget, 0}, {store.KindKey, "def", AlertMaxBudget, 80},
		{store.KindKey, "custom", AlertMaxBudget, 50}, {store.KindKey, "custom", AlertMaxBudget, 75}, {store.KindKey, "custom", AlertMaxBudget, 100},
		{store.KindUser, "u", AlertMaxBudget, 80},
	} {
		if n := sink.Count(c.kind, c.id, c.typ, c.pct); n != 1 {
			t.Errorf("%s %s %s %d fired %d times, want 1", c.kind, c.id, c.typ, c.pct, n)
		}
	}
	if n := len(sink.Crossings()); n != 6 {
		t.Errorf("%d crossings, want 6: %+v", n, sink.Crossings())
	}
	for _, c := range sink.Crossings() {
		if c.OldSpend >= c.ThresholdAmount || c.NewSpend < c.ThresholdAmount || c.MaxBudget == nil {
			t.Errorf("bad crossing %+v", c)
		}
		if c.ID == "custom" && c.Threshold == 100 && c.NewSpend != *pico("1") {
			t.Errorf("100%% crossing not on the exhausting request: %+v", c)
		}
	}
	// The key spent exactly its budget: later requests are refused.
	if s := l.Spend(store.KindKey, "custom"); s != *pico("1") {
		t.Errorf("custom spend %s", s)
	}
}

func TestLedgerCrossingRules(t *testing.T) {
	sink := &RecordingSink{}
	l := newTestLedger(t, LedgerConfig{Sink: sink, MaxAlertPct: 0.9})
	l.Upsert(Account{Kind: store.KindKey, ID: "k", Spend: *pico("7"), MaxBudget: pico("10"), SoftBudget: pico("8")})
	commit := func(id, usd string) {
		r, berr := l.Reserve(id, "", 0)
		if berr != nil {
			t.Fatal(berr)
		}
		l.Commit(r, *pico(usd), "m", 0, 0)
	}
	// One request from 70% to 105%: soft and the 90% alert both fire.
	commit("k", "3.5")
	cs := sink.Crossings()
	if len(cs) != 2 || cs[0].AlertType != AlertSoftBudget || cs[0].ThresholdAmount != *pico("8") ||
		cs[1].AlertType != AlertMaxBudget || cs[1].Threshold != 90 || cs[1].ThresholdAmount != *pico("9") ||
		cs[1].OldSpend != *pico("7") || cs[1].NewSpend != *pico("10.5") || *cs[1].SoftBudget != *pico("8") {
		t.Fatalf("crossings %+v", cs)
	}
	// Raising the budget re-arms: already past 90% of 11.5, fires on the next commit.
	sink.Reset()
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("11.5"), SoftBudget: pico("8")})
	commit("k", "0")
	cs = sink.Crossings()
	if len(cs) != 2 || cs[1].Threshold != 90 || cs[1].ThresholdAmount != *pico("10.35") {
		t.Fatalf("after budget change: %+v", cs)
	}
	// Same config again: no re-arm.
	sink.Reset()
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("11.5"), SoftBudget: pico("8")})
	commit("k", "0.1")
	if cs := sink.Crossings(); len(cs) != 0 {
		t.Fatalf("fired again without re-arm: %+v", cs)
	}
	// Thresholds are exact: ceil(max * pct / 100) in pico.
	if got := percentOf(3, 80); got != 3 {
		t.Errorf("percentOf(3,80) = %d", got)
	}
	if got := percentOf(1<<62, 100); got != 1<<62 {
		t.Errorf("percentOf overflow: %d", got)
	}
}

func TestLedgerResetWithClock(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	fs := newFakeStore()
	fs.deltasFirst = true // the order that would lose new-window charges if sent together
	sink := &RecordingSink{}
	l := newTestLedger(t, LedgerConfig{Writer: fs, Sink: sink, Now: clk.Now})
	w0 := clk.t.Add(30 * time.Second)
	fs.window["key/k"] = &w0
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1"), BudgetDuration: "30s", ResetAt: &w0})
	commit := func(usd string) {
		r, berr := l.Reserve("k", "", 0)
		if berr != nil {
			t.Fatal(berr)
		}
		l.Commit(r, *pico(usd), "m", 0, 0)
	}
	commit("0.85")
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fs.get("key", "k") != *pico("0.85") || sink.Count("key", "k", AlertMaxBudget, 80) != 1 {
		t.Fatalf("before reset: store %d, crossings %+v", fs.get("key", "k"), sink.Crossings())
	}
	commit("0.2")
	if _, berr := l.Reserve("k", "", 0); berr == nil {
		t.Fatal("exhausted key admitted")
	}
	clk.Advance(95 * time.Second) // three periods later: 12:01:35
	s, _ := l.Snapshot("key", "k")
	w1 := time.Date(2026, 12, 4, 12, 1, 30, 0, time.UTC)
	if s.Spend != 0 || s.ResetAt == nil || !s.ResetAt.Equal(w1.Add(30*time.Second)) {
		t.Fatalf("after reset: %+v (reset at %v)", s, s.ResetAt)
	}
	commit("0.9") // new window: alerts re-armed
	if n := sink.Count("key", "k", AlertMaxBudget, 80); n != 2 {
		t.Fatalf("80%% fired %d times, want once per window", n)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fs.get("key", "k"); got != *pico("0.9") || !fs.window["key/k"].Equal(w1.Add(30*time.Second)) {
		t.Fatalf("store after reset: spend %s window %v", got, fs.window["key/k"])
	}
	// Idle account: the flusher's sweep resets it and tells the store.
	clk.Advance(time.Hour)
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fs.get("key", "k"); got != 0 {
		t.Fatalf("idle reset not written: %s", got)
	}
	// Account with a duration but no stored reset time: deltas stay tagged
	// nil until the first reset, which moves the store from nil.
	l.Upsert(Account{Kind: store.KindUser, ID: "u", BudgetDuration: "1mo"})
	r, _ := l.Reserve("k", "u", 0)
	l.Commit(r, 5, "m", 0, 0)
	l.Flush(context.Background())
	if fs.get("user", "u") != 5 {
		t.Fatalf("nil-window delta dropped")
	}
	clk.Advance(32 * 24 * time.Hour)
	r, _ = l.Reserve("k", "u", 0)
	l.Commit(r, 7, "m", 0, 0)
	l.Flush(context.Background())
	if fs.get("user", "u") != 7 || fs.window["user/u"] == nil {
		t.Fatalf("first monthly reset: spend %d window %v", fs.get("user", "u"), fs.window["user/u"])
	}
}

func TestLedgerWriteBehindFailure(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 4, 23, 59, 0, 0, time.UTC)}
	fs := newFakeStore()
	l := newTestLedger(t, LedgerConfig{Writer: fs, Now: clk.Now})
	w := clk.t.Add(time.Hour)
	fs.window["key/k"] = &w
	l.Upsert(Account{Kind: store.KindKey, ID: "k", BudgetDuration: "1h", ResetAt: &w})
	var total money.Pico
	commit := func(c money.Pico) {
		r, _ := l.Reserve("k", "", 0)
		l.Commit(r, c, "gpt-4o", 100, 10)
		total += c
	}
	commit(1000)
	fs.failNext = 2
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("flush did not report the failure")
	}
	commit(200)
	clk.Advance(2 * time.Minute) // next UTC day
	commit(30)
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("second flush did not fail")
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fs.get("key", "k"); got != total {
		t.Fatalf("stored %d, want %d", got, total)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fs.get("key", "k"); got != total || len(fs.batches) != 1 {
		t.Fatalf("stored %d after extra flush, %d batches", got, len(fs.batches))
	}
	d1, d2 := fs.daily["k/gpt-4o/2026-12-04"], fs.daily["k/gpt-4o/2026-12-05"]
	if d1.Spend != 1200 || d1.Requests != 2 || d1.InputTokens != 200 || d2.Spend != 30 || d2.Requests != 1 || d2.OutputTokens != 10 {
		t.Fatalf("daily %+v %+v", d1, d2)
	}
	// A reset while the store is down: the held-back charges of the new
	// window arrive after the reset, whatever order the store applies.
	fs.deltasFirst = true
	fs.failNext = 1
	clk.Advance(time.Hour)
	commit(50)
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("flush did not fail")
	}
	commit(60)
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, mem := fs.get("key", "k"), l.Spend("key", "k"); got != 110 || mem != 110 {
		t.Fatalf("after reset during outage: store %d memory %d, want 110", got, mem)
	}
}

func TestLedgerCloseFlushes(t *testing.T) {
	fs := newFakeStore()
	l := NewLedger(LedgerConfig{Writer: fs, FlushInterval: 10 * time.Millisecond})
	r, _ := l.Reserve("k", "u", 0)
	l.Commit(r, 42, "m", 1, 1)
	for deadline := time.Now().Add(5 * time.Second); fs.get("key", "k") != 42; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("background flush did not run")
		}
	}
	r, _ = l.Reserve("k", "u", 0)
	l.Commit(r, 8, "m", 1, 1)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fs.get("key", "k") != 50 || fs.get("user", "u") != 50 {
		t.Fatalf("Close did not flush: %d %d", fs.get("key", "k"), fs.get("user", "u"))
	}
}

func TestBudgetDuration(t *testing.T) {
	from := time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)
	for s, want := range map[string]time.Time{
		"30s": from.Add(30 * time.Second), "30m": from.Add(30 * time.Minute), "1h": from.Add(time.Hour),
		"1d": from.AddDate(0, 0, 1), "7d": from.AddDate(0, 0, 7), "30d": from.AddDate(0, 0, 30), "1mo": from.AddDate(0, 1, 0), " 2mo ": from.AddDate(0, 2, 0),
	} {
		got, err := NextReset(from, s)
		if err != nil || !got.Equal(want) {
			t.Errorf("NextReset(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0d", "-1d", "1", "d", "1y", "1.5h", "1 d", "1M", "99999999999d"} {
		if _, err := ParseBudgetDuration(s); err == nil {
			t.Errorf("ParseBudgetDuration(%q) accepted", s)
		}
	}
	d, _ := ParseBudgetDuration("30s")
	if got := d.after(from, from.Add(95*time.Second)); !got.Equal(from.Add(120 * time.Second)) {
		t.Errorf("after = %v", got)
	}
	m, _ := ParseBudgetDuration("1mo")
	if got := m.after(from, from.AddDate(0, 0, 40)); !got.Equal(from.AddDate(0, 2, 0)) {
		t.Errorf("after months = %v", got)
	}
}

func TestLedgerCommitNoAlloc(t *testing.T) {
	l := newTestLedger(t, LedgerConfig{Sink: &RecordingSink{}})
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1000000"), SoftBudget: pico("900000")})
	l.Upsert(Account{Kind: store.KindUser, ID: "u", MaxBudget: pico("1000000")})
	r, _ := l.Reserve("k", "u", 0)
	l.Commit(r, 1, "m", 1, 1) // creates the daily entry
	n := testing.AllocsPerRun(1000, func() {
		r, berr := l.Reserve("k", "u", 10)
		if berr != nil {
			t.Fatal(berr)
		}
		l.Commit(r, 1, "m", 1, 1)
	})
	if n != 0 {
		t.Fatalf("Reserve+Commit allocate %v times", n)
	}
}

func BenchmarkLedgerCommitParallel(b *testing.B) {
	l := NewLedger(LedgerConfig{Sink: &RecordingSink{}, FlushInterval: 50 * time.Millisecond, Writer: newFakeStore()})
	defer l.Close(context.Background())
	const keys = 1024
	res := make([]Reservation, keys)
	for i := range res {
		id := fmt.Sprint("key-", i)
		l.Upsert(Account{Kind: store.KindKey, ID: id, MaxBudget: pico("1000000"), SoftBudget: pico("900000")})
		res[i], _ = l.Reserve(id, fmt.Sprint("user-", i%64), 0)
	}
	var seq atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			i++
			l.Commit(res[i%keys], 1, "gpt-4o-mini", 10, 5)
		}
	})
}

func BenchmarkLedgerReserveParallel(b *testing.B) {
	l := NewLedger(LedgerConfig{FlushInterval: time.Hour})
	defer l.Close(context.Background())
	const keys = 1024
	ids := make([]string, keys)
	uids := make([]string, keys)
	for i := range ids {
		ids[i], uids[i] = fmt.Sprint("key-", i), fmt.Sprint("user-", i%64)
		l.Upsert(Account{Kind: store.KindKey, ID: ids[i], MaxBudget: pico("1000000")})
	}
	var seq atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			i++
			r, berr := l.Reserve(ids[i%keys], uids[i%keys], 100)
			if berr != nil {
				b.Fatal(berr)
			}
			l.Release(r)
		}
	})
}

// BenchmarkCrossingNoCross measures the crossing check of a commit that
// crosses nothing, on an account with soft and custom thresholds.
func BenchmarkCrossingNoCross(b *testing.B) {
	l := NewLedger(LedgerConfig{FlushInterval: time.Hour})
	defer l.Close(context.Background())
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1000000"), SoftBudget: pico("900000"), AlertPercents: []int{50, 75, 100}})
	a := l.lookup(kindKey, "k")
	a.dirty = true // keep markDirty out of the measurement
	b.ReportAllocs()
	for b.Loop() {
		if cs := a.charge(l, 0); cs != nil {
			b.Fatal("crossed")
		}
	}
}

func BenchmarkLedgerCommitSameKeyParallel(b *testing.B) {
	l := NewLedger(LedgerConfig{FlushInterval: time.Hour})
	defer l.Close(context.Background())
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("1000000")})
	r, _ := l.Reserve("k", "u", 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Commit(r, 1, "m", 1, 1)
		}
	})
}
