package alerts

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/sqlite"
	"github.com/llmspend/llmspend/templates"
)

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "alerts.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func renderer(t testing.TB) *templates.Renderer {
	t.Helper()
	r, err := templates.New(templates.SettingsFromEnv(func(string) string { return "" }))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type dir map[string]Entity // kind/id -> entity

func (d dir) Entity(_ context.Context, kind, id string) (Entity, error) {
	e, ok := d[kind+"/"+id]
	if !ok {
		return Entity{}, store.ErrNotFound
	}
	return e, nil
}

// outbox commits messages to the real store's outbox, like mailer.Pool.Enqueue.
type outbox struct {
	st   store.Outbox
	mu   sync.Mutex
	msgs []mailer.Message
	fail atomic.Int32 // fail the next n enqueues
	gate chan struct{}
}

func (o *outbox) enqueue(ctx context.Context, m mailer.Message) (int64, error) {
	if o.gate != nil {
		<-o.gate
	}
	if o.fail.Load() > 0 {
		o.fail.Add(-1)
		return 0, errors.New("outbox unavailable")
	}
	if err := m.Validate(); err != nil {
		return 0, err
	}
	id, err := o.st.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: m.IdempotencyKey, Kind: m.Kind, To: m.To,
		Subject: m.Subject, HTML: m.HTML, Text: m.Text, NextAttemptAt: time.Now(), CreatedAt: time.Now()})
	if err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.msgs = append(o.msgs, m)
	o.mu.Unlock()
	return id, nil
}

func (o *outbox) list() []mailer.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]mailer.Message(nil), o.msgs...)
}

func newAlerter(t testing.TB, st Store, d Directory, ob *outbox, mod func(*Config)) *Alerter {
	t.Helper()
	cfg := Config{Store: st, Directory: d, Renderer: renderer(t), Enqueue: ob.enqueue, SweepInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

func usd(s string) *money.Pico {
	p, err := money.ParseUSD(s)
	if err != nil {
		panic(err)
	}
	return &p
}

func maxCrossing(id string, pct int, spendUSD string) spend.Crossing {
	mx := usd("10")
	return spend.Crossing{Kind: store.KindKey, ID: id, AlertType: spend.AlertMaxBudget, Threshold: pct,
		ThresholdAmount: *mx / 100 * money.Pico(pct), OldSpend: 0, NewSpend: *usd(spendUSD), MaxBudget: mx}
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle waits until the alerter has looked at every crossing it received.
func settle(t testing.TB, a *Alerter) Stats {
	t.Helper()
	waitFor(t, "the alerter to settle", func() bool {
		s := a.Stats()
		return s.QueueLen == 0 && s.Enqueued+s.SuppressedCache+s.SuppressedClaim+s.NoRecipient+s.Gone+s.Errors >= s.Received
	})
	return a.Stats()
}

func TestAlertOnceThenCacheThenClaim(t *testing.T) {
	st := openStore(t)
	d := dir{"key/k1": {Email: "owner@example.com", KeyAlias: "billing"}}
	ob := &outbox{st: st}
	a := newAlerter(t, st, d, ob, nil)

	c := maxCrossing("k1", 80, "8.5")
	a.Crossing(c)
	s := settle(t, a)
	msgs := ob.list()
	if len(msgs) != 1 || s.Enqueued != 1 {
		t.Fatalf("messages %d, stats %+v", len(msgs), s)
	}
	m := msgs[0]
	if m.Kind != "max_budget" || len(m.To) != 1 || m.To[0] != "owner@example.com" ||
		m.Subject != "LiteLLM: Max Budget Alert - 80% of Maximum Budget Reached" {
		t.Fatalf("message %q %v %q", m.Kind, m.To, m.Subject)
	}
	for _, want := range []string{"$8.50", "$10.00", "$8.00", "billing"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text body lacks %q:\n%s", want, m.Text)
		}
	}
	if !strings.HasPrefix(m.IdempotencyKey, keyPrefix) {
		t.Fatalf("idempotency key %q", m.IdempotencyKey)
	}

	// The same crossing again: the cache answers (Set is async: wait for it).
	waitFor(t, "cache entry", func() bool { _, ok := a.cache.Get(cacheKey(ClaimOf(c))); return ok })
	a.Crossing(c)
	s = settle(t, a)
	if s.SuppressedCache != 1 || len(ob.list()) != 1 {
		t.Fatalf("cache suppression: %+v, %d messages", s, len(ob.list()))
	}

	// A restart (a new alerter, empty cache): the store claim answers.
	b := newAlerter(t, st, d, ob, nil)
	b.Crossing(c)
	sb := settle(t, b)
	if sb.SuppressedClaim != 1 || len(ob.list()) != 1 {
		t.Fatalf("claim suppression: %+v, %d messages", sb, len(ob.list()))
	}

	// A new budget window (reset) re-arms it.
	reset := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c2 := c
	c2.ResetAt = &reset
	b.Crossing(c2)
	settle(t, b)
	// So does a changed max budget.
	c3 := c
	c3.MaxBudget = usd("20")
	b.Crossing(c3)
	settle(t, b)
	if n := len(ob.list()); n != 3 {
		t.Fatalf("after reset and budget change: %d messages, want 3", n)
	}
	if ob.list()[1].IdempotencyKey == ob.list()[0].IdempotencyKey {
		t.Fatal("idempotency keys of different claims collide")
	}
}

func TestSoftBudgetAlert(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	reset := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newAlerter(t, st, dir{"user/u1": {Email: "u1@example.com"}}, ob, nil)
	a.Crossing(spend.Crossing{Kind: store.KindUser, ID: "u1", AlertType: spend.AlertSoftBudget,
		ThresholdAmount: *usd("0.001"), NewSpend: *usd("0.0015"), SoftBudget: usd("0.001"), MaxBudget: usd("0.002"), ResetAt: &reset})
	settle(t, a)
	msgs := ob.list()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.Kind != "soft_budget" || m.To[0] != "u1@example.com" || m.Subject != "LiteLLM: Soft Budget Crossed - Total Soft Budget: $0.001" {
		t.Fatalf("%q %v %q", m.Kind, m.To, m.Subject)
	}
	for _, want := range []string{"$0.0015", "$0.001", "$0.002", "2030"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text body lacks %q:\n%s", want, m.Text)
		}
	}
	recs, err := st.ListAlerts(context.Background(), store.KindUser, "u1")
	if err != nil || len(recs) != 1 || recs[0].Window != "2030-01-02T03:04:05Z|0.002|soft=0.001" {
		t.Fatalf("claims %+v %v", recs, err)
	}
}

func TestRecipients(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	meta := map[string]any{MetaAlertEmails: map[string]any{
		"50":  []any{"fin@example.com", "OWNER@example.com"},
		"100": "oncall@example.com, pager@example.com",
	}}
	d := dir{
		"key/k1":     {Email: "owner@example.com", Metadata: meta},
		"key/lone":   {Metadata: meta}, // no owner: only the extra recipients
		"key/nobody": {},
	}
	a := newAlerter(t, st, d, ob, nil)
	a.Crossing(maxCrossing("k1", 50, "5"))
	settle(t, a)
	a.Crossing(maxCrossing("k1", 100, "10"))
	settle(t, a)
	a.Crossing(maxCrossing("k1", 75, "7.5")) // no entry for 75: owner only
	settle(t, a)
	a.Crossing(maxCrossing("lone", 100, "10"))
	settle(t, a)
	a.Crossing(maxCrossing("nobody", 80, "9"))
	a.Crossing(maxCrossing("deleted", 80, "9"))
	s := settle(t, a)
	got := map[string]string{}
	for _, m := range ob.list() {
		got[m.Subject] += strings.Join(m.To, ",") + ";"
	}
	want := map[string]string{
		"LiteLLM: Max Budget Alert - 50% of Maximum Budget Reached":  "owner@example.com,fin@example.com;",
		"LiteLLM: Max Budget Alert - 100% of Maximum Budget Reached": "owner@example.com,oncall@example.com,pager@example.com;oncall@example.com,pager@example.com;",
		"LiteLLM: Max Budget Alert - 75% of Maximum Budget Reached":  "owner@example.com;",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("recipients\n got %v\nwant %v", got, want)
	}
	if s.NoRecipient != 1 {
		t.Fatalf("no-recipient count %+v", s)
	}
}

// Two gateway instances on one store, 100 goroutines each reporting the
// same crossing: exactly one email.
func TestConcurrentInstancesOneEmail(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	d := dir{"key/k": {Email: "o@example.com"}}
	a := newAlerter(t, st, d, ob, func(c *Config) { c.Workers = 4 })
	b := newAlerter(t, st, d, ob, func(c *Config) { c.Workers = 4 })
	c := maxCrossing("k", 80, "8")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				a.Crossing(c)
			} else {
				b.Crossing(c)
			}
		}()
	}
	wg.Wait()
	sa, sb := settle(t, a), settle(t, b)
	if n := len(ob.list()); n != 1 {
		t.Fatalf("%d emails, want 1 (%+v %+v)", n, sa, sb)
	}
	if sa.Errors+sb.Errors != 0 {
		t.Fatalf("errors: %+v %+v", sa, sb)
	}
}

// A full channel never blocks the caller and loses nothing.
func TestOverflowNeverBlocksNorDrops(t *testing.T) {
	st := openStore(t)
	gate := make(chan struct{})
	ob := &outbox{st: st, gate: gate}
	d := dir{}
	const n = 50
	for i := range n {
		d[fmt.Sprintf("key/k%d", i)] = Entity{Email: fmt.Sprintf("o%d@example.com", i)}
	}
	a := newAlerter(t, st, d, ob, func(c *Config) { c.Queue = 2; c.Workers = 1 })
	start := time.Now()
	for i := range n {
		a.Crossing(maxCrossing(fmt.Sprintf("k%d", i), 80, "8"))
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Crossing blocked: %v", el)
	}
	s := a.Stats()
	if s.Overflowed < n-3 {
		t.Fatalf("overflow not used: %+v", s)
	}
	close(gate)
	settle(t, a)
	if got := len(ob.list()); got != n {
		t.Fatalf("%d emails, want %d", got, n)
	}
}

// An enqueue that fails releases the claim: the next crossing sends.
func TestEnqueueFailureReleasesClaim(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	ob.fail.Store(4) // every quick retry of the first attempt fails
	// A retry far in the future: this test is about the release.
	a := newAlerter(t, st, dir{"key/k": {Email: "o@example.com"}}, ob, func(c *Config) { c.RetryAfter = time.Hour })
	c := maxCrossing("k", 80, "8")
	a.Crossing(c)
	s := settle(t, a)
	if s.Errors != 1 || s.Released != 1 || len(ob.list()) != 0 {
		t.Fatalf("%+v, %d messages", s, len(ob.list()))
	}
	if recs, _ := st.ListAlerts(context.Background(), "", ""); len(recs) != 0 {
		t.Fatalf("claim kept: %+v", recs)
	}
	a.Crossing(c)
	settle(t, a)
	if len(ob.list()) != 1 {
		t.Fatal("alert not sent after the released claim")
	}
}

// A store outage longer than the quick retries delays an alert; it is not
// lost: the crossing is handled again until the store answers.
func TestStoreOutageDelaysAlert(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	ob.fail.Store(4 * 2) // two whole attempts (each with its quick retries) fail
	a := newAlerter(t, st, dir{"key/k": {Email: "o@example.com"}}, ob, func(c *Config) { c.RetryAfter = 10 * time.Millisecond })
	a.Crossing(maxCrossing("k", 80, "8"))
	waitFor(t, "the alert after the outage", func() bool { return len(ob.list()) == 1 })
	s := a.Stats()
	if s.Errors != 2 || s.Enqueued != 1 {
		t.Fatalf("%+v", s)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(ob.list()); n != 1 {
		t.Fatalf("%d emails, want exactly 1", n)
	}
}

// A transient enqueue error is retried with the same idempotency key.
func TestEnqueueRetrySameKey(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	ob.fail.Store(1)
	a := newAlerter(t, st, dir{"key/k": {Email: "o@example.com"}}, ob, nil)
	a.Crossing(maxCrossing("k", 80, "8"))
	s := settle(t, a)
	if s.Enqueued != 1 || s.Errors != 0 || len(ob.list()) != 1 {
		t.Fatalf("%+v", s)
	}
}

// The sweep releases the claim of an alert email that finally failed, and
// only that claim.
func TestSweepReleasesFailedAlerts(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	ctx := context.Background()
	a := newAlerter(t, st, dir{"key/k": {Email: "o@example.com"}, "key/ok": {Email: "p@example.com"}}, ob, nil)
	c := maxCrossing("k", 80, "8")
	a.Crossing(c)
	a.Crossing(maxCrossing("ok", 80, "8"))
	settle(t, a)
	all, err := st.ListOutbox(ctx, "", 0)
	if err != nil || len(all) != 2 {
		t.Fatalf("outbox %v %v", all, err)
	}
	var failedID int64
	for _, m := range all {
		if strings.Contains(strings.Join(m.To, ","), "o@example.com") {
			failedID = m.ID
		}
	}
	if _, err := st.ClaimDue(ctx, time.Now().Add(time.Hour), time.Minute, 10); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkFailed(ctx, failedID, "550 no such mailbox"); err != nil {
		t.Fatal(err)
	}
	n, err := a.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep released %d, %v", n, err)
	}
	recs, _ := st.ListAlerts(ctx, "", "")
	if len(recs) != 1 || recs[0].ID != "ok" {
		t.Fatalf("claims after sweep: %+v", recs)
	}
	// Sweeping again changes nothing; the alert can fire again.
	if n, _ := a.Sweep(ctx); n != 0 {
		t.Fatalf("second sweep released %d", n)
	}
	a.Crossing(c)
	settle(t, a)
	if len(ob.list()) != 3 {
		t.Fatalf("%d messages after release", len(ob.list()))
	}
	// A new alerter (restart) sweeping the same failed message must not
	// release the claim that was won again since.
	b := newAlerter(t, st, dir{}, ob, nil)
	if n, _ := b.Sweep(ctx); n != 0 {
		t.Fatalf("stale failed message released a fresh claim")
	}
}

// Stop drains what was queued; what could not be handled is returned.
func TestStopDrainsAndHandsBack(t *testing.T) {
	st := openStore(t)
	ob := &outbox{st: st}
	d := dir{}
	for i := range 20 {
		d[fmt.Sprintf("key/k%d", i)] = Entity{Email: "o@example.com"}
	}
	a := newAlerter(t, st, d, ob, func(c *Config) { c.Queue = 4 })
	for i := range 20 {
		a.Crossing(maxCrossing(fmt.Sprintf("k%d", i), 80, "8"))
	}
	if left := a.Stop(context.Background()); len(left) != 0 {
		t.Fatalf("left %d", len(left))
	}
	if len(ob.list()) != 20 {
		t.Fatalf("%d emails after drain", len(ob.list()))
	}

	// A stuck outbox: Stop's deadline hands the rest back.
	gate := make(chan struct{})
	ob2 := &outbox{st: st, gate: gate}
	b := newAlerter(t, st, d, ob2, func(c *Config) { c.Queue = 4; c.Workers = 1 })
	for i := range 10 {
		b.Crossing(maxCrossing(fmt.Sprintf("k%d", i), 50, "8"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	go func() { time.Sleep(300 * time.Millisecond); close(gate) }()
	left := b.Stop(ctx)
	// Every crossing is either sent or handed back (one cut off by the
	// deadline is handed back too), never both, never neither.
	seen := map[string]int{}
	for _, c := range left {
		seen[c.ID]++
	}
	for _, m := range ob2.list() {
		cl, _, _ := parseIdempotencyKey(m.IdempotencyKey)
		seen[cl.ID]++
	}
	if len(left) == 0 || len(seen) != 10 {
		t.Fatalf("left %d, accounted for %v", len(left), seen)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s both sent and handed back: %v", id, seen)
		}
	}
	// A crossing after Stop is still handled.
	b.Crossing(maxCrossing("k19", 50, "8"))
	waitFor(t, "late crossing", func() bool {
		for _, m := range ob2.list() {
			if cl, _, ok := parseIdempotencyKey(m.IdempotencyKey); ok && cl.ID == "k19" {
				return true
			}
		}
		return false
	})
	if b.Stats().Late != 1 {
		t.Fatalf("late count %+v", b.Stats())
	}
}

func TestValidateAlertEmails(t *testing.T) {
	ok := []any{
		nil,
		map[string]any{},
		map[string]any{"50": []any{"a@x.io"}, "75": []any{"a@x.io", "b@x.io"}, "100": "c@x.io, d@x.io"},
		map[string]any{"1": []any{}, "80": ""},
	}
	for _, v := range ok {
		if err := ValidateAlertEmails(v); err != nil {
			t.Errorf("%v: %v", v, err)
		}
	}
	bad := []any{
		[]any{"a@x.io"},
		"a@x.io",
		map[string]any{"0": []any{"a@x.io"}},
		map[string]any{"101": []any{"a@x.io"}},
		map[string]any{"50.5": []any{"a@x.io"}},
		map[string]any{"+50": []any{"a@x.io"}},
		map[string]any{"abc": []any{"a@x.io"}},
		map[string]any{"50": []any{"not an email"}},
		map[string]any{"50": []any{1.0}},
		map[string]any{"50": 3.0},
		map[string]any{"50": "a@x.io, b@x.io\r\nBcc: evil@x.io"},
		map[string]any{"50": map[string]any{}},
	}
	for _, v := range bad {
		if err := ValidateAlertEmails(v); err == nil {
			t.Errorf("%v accepted", v)
		}
	}
}

func FuzzValidateAlertEmails(f *testing.F) {
	f.Add("50", "a@x.io, b@y.io")
	f.Add("100", "")
	f.Add("0", "x")
	f.Fuzz(func(t *testing.T, k, v string) {
		meta := map[string]any{MetaAlertEmails: map[string]any{k: v}}
		err := ValidateAlertEmails(meta[MetaAlertEmails])
		if err != nil {
			return
		}
		// Whatever validates yields a threshold in 1..100 and clean addresses.
		p, ok := parsePercent(k)
		if !ok {
			t.Fatalf("accepted threshold %q", k)
		}
		for _, e := range ThresholdRecipients(meta, p) {
			if strings.ContainsAny(e, "\r\n,<>") || !ValidEmail(e) {
				t.Fatalf("accepted address %q", e)
			}
			if _, err := mailer.ParseAddress("To", e); err != nil {
				t.Fatalf("address %q validates here but not in the mailer: %v", e, err)
			}
		}
	})
}

func TestIdempotencyKeyRoundTrip(t *testing.T) {
	cl := store.AlertClaim{Kind: "user", ID: "weird|id\u00e9", AlertType: "max_budget", Threshold: 75, Window: "2030-01-01T00:00:00Z|1.5"}
	at := time.Unix(0, 1234567890123456789)
	k := idempotencyKey(cl, at)
	if err := (&mailer.Message{Kind: "x", To: []string{"a@b.c"}, Subject: "s", HTML: "h", Text: "t", IdempotencyKey: k}).Validate(); err != nil {
		t.Fatal(err)
	}
	got, gotAt, ok := parseIdempotencyKey(k)
	if !ok || got != cl || !gotAt.Equal(at) {
		t.Fatalf("%+v %v %v", got, gotAt, ok)
	}
	if _, _, ok := parseIdempotencyKey("budget-alert.!!"); ok {
		t.Fatal("garbage parsed")
	}
}

// blockingDir holds the only worker on its first look-up, so a benchmark
// measures the request path alone (worker allocations would count too).
type blockingDir struct{ gate chan struct{} }

func (d blockingDir) Entity(context.Context, string, string) (Entity, error) {
	<-d.gate
	return Entity{Email: "o@example.com"}, nil
}

// BenchmarkCrossing is the request path's cost of reporting a crossing:
// a non-blocking send on the bounded channel (sized so it never fills).
func BenchmarkCrossing(b *testing.B) {
	st := openStore(b)
	gate := make(chan struct{})
	const q = 1 << 14
	a := newAlerter(b, st, blockingDir{gate}, &outbox{st: st}, func(c *Config) { c.Queue = q; c.Workers = 1 })
	c := maxCrossing("k", 80, "8")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%(q/2) == q/2-1 {
			b.StopTimer()
			for len(a.queue) > 0 {
				<-a.queue // the worker's job, off the clock
			}
			b.StartTimer()
		}
		a.Crossing(c)
	}
	b.StopTimer()
	if s := a.Stats(); s.Overflowed != 0 {
		b.Fatalf("overflowed: %+v", s)
	}
	close(gate)
}

// BenchmarkCrossingOverflow is the cost when the channel is full: the
// crossing is appended to the overflow list under a mutex.
func BenchmarkCrossingOverflow(b *testing.B) {
	st := openStore(b)
	gate := make(chan struct{})
	a := newAlerter(b, st, blockingDir{gate}, &outbox{st: st}, func(c *Config) { c.Queue = 1; c.Workers = 1 })
	c := maxCrossing("k", 80, "8")
	a.Crossing(c)
	a.Crossing(c)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Crossing(c)
	}
	b.StopTimer()
	close(gate)
}

// BenchmarkCrossingParallel: many requests reporting crossings at once,
// with a consumer that only empties the channel.
func BenchmarkCrossingParallel(b *testing.B) {
	st := openStore(b)
	gate := make(chan struct{})
	a := newAlerter(b, st, blockingDir{gate}, &outbox{st: st}, func(c *Config) { c.Queue = 1 << 14; c.Workers = 1 })
	c := maxCrossing("k", 80, "8")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-a.queue:
			case <-stop:
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Crossing(c)
		}
	})
	b.StopTimer()
	close(gate)
}
