package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/cluster"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/postgres"
)

// The per-request cost of the gateway's metering path (auth, body
// inspection, reserve, proxy to a stub upstream, usage extraction,
// commit) on PostgreSQL, local counters against shared Redis counters at
// several batch intervals, and against a naive design that pays one Redis
// round trip per request.

// clusterBenchHandler builds a Handler over a fresh PostgreSQL schema;
// batch 0 means local counters only.
func clusterBenchHandler(b testing.TB, batch time.Duration) (*Handler, string, *cluster.Counters) {
	b.Helper()
	dsn := pgSchema(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	plain := newPlainKey()
	now := time.Now().UTC()
	maxB := 1_000_000 * money.USD // never near: no early sends
	k := store.Key{ID: newID(), Token: tokenHex(hashKey(plain)), KeyName: redactKey(plain), MaxBudget: &maxB, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateKey(ctx, &k); err != nil {
		b.Fatal(err)
	}
	s := &sharedState{store: st, keys: newKeyCache(st), logger: zap.NewNop(), sink: new(sinkSwitch)}
	if err := s.keys.load(ctx); err != nil {
		b.Fatal(err)
	}
	lc := spend.LedgerConfig{Writer: st, Sink: s.sink}
	var ctr *cluster.Counters
	rdb := redisClient(b)
	if batch > 0 {
		ctr, err = cluster.New(rdb, redisPrefix(b, rdb), nil)
		if err != nil {
			b.Fatal(err)
		}
		lc.Shared = sharedCounters{ctr}
		lc.Durable = durableAccounts(st)
		lc.SharedInterval = batch
	}
	s.ledger = spend.NewLedger(lc)
	b.Cleanup(func() { s.ledger.Close(context.Background()) })
	if err := loadAccounts(ctx, st, s.ledger); err != nil {
		b.Fatal(err)
	}
	prices, err := (&App{}).buildPrices()
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{app: &App{MaxRequestBody: defaultMaxRequestBody, prices: prices}, state: s, logger: zap.NewNop(), now: time.Now}
	if ctr == nil {
		ctr, _ = cluster.New(rdb, redisPrefix(b, rdb), nil)
	}
	return h, plain, ctr
}

var benchChatBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)

// upstreamStub answers like OpenAI, with usage.
var upstreamStub = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	_, err := w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":23,"completion_tokens":41,"total_tokens":64}}`))
	return err
})

// BenchmarkClusterMeteredRequest: ns/op is the gateway's own cost per
// request (the upstream is a stub); "local" has no Redis, "batch=Xms"
// shares spend through Redis every X, "sync" adds the round trip a
// per-request design would pay.
func BenchmarkClusterMeteredRequest(b *testing.B) {
	cases := []struct {
		name  string
		batch time.Duration
		sync  bool
	}{
		{"local", 0, false},
		{"batch=5ms", 5 * time.Millisecond, false},
		{"batch=20ms", 20 * time.Millisecond, false},
		{"batch=50ms", 50 * time.Millisecond, false},
		{"sync-roundtrip", 0, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, plain, ctr := clusterBenchHandler(b, c.batch)
			auth := "Bearer " + plain
			deltas := []store.SpendDelta{{Kind: store.KindKey, ID: "bench", Amount: 1}}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := httptest.NewRecorder()
				for pb.Next() {
					req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(benchChatBody))
					req.Header.Set("Authorization", auth)
					w.Body.Reset()
					if err := h.ServeHTTP(w, req, upstreamStub); err != nil {
						b.Fatal(err)
					}
					if c.sync {
						if _, err := ctr.Add(context.Background(), deltas); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}

// TestClusterLatencyFigures measures sequential request latency through
// the handler (one client, so it is latency, not throughput) for the same
// cases and logs percentiles; run with -v to record them. It checks that
// batched Redis stays within 2x of local-only at the median.
func TestClusterLatencyFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("latency figures skipped in -short mode")
	}
	const n = 3000
	type res struct {
		name          string
		p50, p90, p99 time.Duration
	}
	var out []res
	for _, c := range []struct {
		name  string
		batch time.Duration
		sync  bool
	}{
		{"local", 0, false},
		{"batch=5ms", 5 * time.Millisecond, false},
		{"batch=20ms", 20 * time.Millisecond, false},
		{"batch=50ms", 50 * time.Millisecond, false},
		{"sync-roundtrip", 0, true},
	} {
		var r res
		ok := t.Run(c.name, func(t *testing.T) {
			h, plain, ctr := clusterBenchHandler(t, c.batch)
			auth := "Bearer " + plain
			deltas := []store.SpendDelta{{Kind: store.KindKey, ID: "bench", Amount: 1}}
			lat := make([]time.Duration, 0, n)
			w := httptest.NewRecorder()
			for i := range n + 200 {
				req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(benchChatBody))
				req.Header.Set("Authorization", auth)
				w.Body.Reset()
				t0 := time.Now()
				if err := h.ServeHTTP(w, req, upstreamStub); err != nil {
					t.Fatal(err)
				}
				if c.sync {
					if _, err := ctr.Add(context.Background(), deltas); err != nil {
						t.Fatal(err)
					}
				}
				if i >= 200 { // warm-up
					lat = append(lat, time.Since(t0))
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			r = res{c.name, lat[n/2], lat[n*9/10], lat[n*99/100]}
		})
		if !ok {
			return
		}
		out = append(out, r)
	}
	for _, r := range out {
		t.Logf("%-15s p50 %8v  p90 %8v  p99 %8v  (p50 %.2fx local)", r.name, r.p50, r.p90, r.p99, float64(r.p50)/float64(out[0].p50))
	}
	for _, r := range out[1:4] {
		if r.p50 > 2*out[0].p50+20*time.Microsecond {
			t.Errorf("%s: median %v more than 2x local-only %v", r.name, r.p50, out[0].p50)
		}
	}
}

// TestClusterEndToEndLatency measures what a gateway process adds to a
// request, sequentially (latency, not throughput), through real Caddy
// processes: the upstream alone, a gateway on PostgreSQL with local
// counters, and one with Redis shared counters (batch 20ms). The
// Redis gateway's added latency must stay within 2x of the local one's.
func TestClusterEndToEndLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("latency figures skipped in -short mode")
	}
	e := newClusterEnv(t)
	e.noRedis = true
	local := e.start("local")
	e.noRedis = false
	shared := e.start("redis")
	lk, _ := local.newKey(nil)
	rk, _ := shared.newKey(nil)
	client := &http.Client{Timeout: 10 * time.Second}
	direct := func() error {
		res, err := client.Post(e.upURL+"/v1/chat/completions", "application/json", bytes.NewReader(benchChatBody))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return err
	}
	via := func(in *instance, key string) func() error {
		return func() error {
			st, err := in.chat(key)
			if err == nil && st != 200 {
				err = fmt.Errorf("status %d", st)
			}
			return err
		}
	}
	const n = 1500
	measure := func(f func() error) []time.Duration {
		lat := make([]time.Duration, 0, n)
		for i := range n + 100 {
			t0 := time.Now()
			if err := f(); err != nil {
				t.Fatal(err)
			}
			if i >= 100 {
				lat = append(lat, time.Since(t0))
			}
		}
		return lat
	}
	// Interleave rounds so drift on a shared machine hits all three.
	var d, l, r []time.Duration
	for range 3 {
		d = append(d, measure(direct)...)
		l = append(l, measure(via(local, lk))...)
		r = append(r, measure(via(shared, rk))...)
	}
	for _, s := range [][]time.Duration{d, l, r} {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	p := func(s []time.Duration, q int) time.Duration { return s[len(s)*q/100] }
	t.Logf("upstream direct  p50 %8v p90 %8v p99 %8v", p(d, 50), p(d, 90), p(d, 99))
	t.Logf("gateway local    p50 %8v p90 %8v p99 %8v  added p50 %v", p(l, 50), p(l, 90), p(l, 99), p(l, 50)-p(d, 50))
	t.Logf("gateway redis    p50 %8v p90 %8v p99 %8v  added p50 %v", p(r, 50), p(r, 90), p(r, 99), p(r, 50)-p(d, 50))
	addL, addR := p(l, 50)-p(d, 50), p(r, 50)-p(d, 50)
	if addR > 2*addL+50*time.Microsecond {
		t.Errorf("Redis gateway adds %v at the median, local-only %v: more than 2x", addR, addL)
	}
}
