package loadtest

import (
	"bytes"
	"context"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/fakeupstream"
)

func TestMain(m *testing.M) {
	// Keep Caddy's own data (instance id) out of the user's home.
	dir, err := os.MkdirTemp("", "llmspend-loadtest")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSmoke runs every workload briefly at a low rate through the real
// in-process Caddy and checks that every request succeeded, that both
// sides carried load and that the tables have their rows. Caddy is a
// process singleton: the tests that start it don't run in parallel.
func TestSmoke(t *testing.T) {
	cfg := Config{
		Rounds:            2,
		Warmup:            100 * time.Millisecond,
		Rate:              100,
		Duration:          500 * time.Millisecond,
		SatWorkers:        4,
		SatDuration:       300 * time.Millisecond,
		StreamRate:        40,
		StreamDuration:    500 * time.Millisecond,
		StreamChunks:      3,
		StreamFirstDelay:  5 * time.Millisecond,
		StreamChunkDelay:  time.Millisecond,
		StreamConcurrency: 8,
		Plots:             true,
		Dir:               t.TempDir(),
		Logf:              t.Logf,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())

	if n := rep.Errors(); n != 0 {
		t.Fatalf("%d requests failed:\n%s", n, table.String())
	}
	for name, p := range map[string]*Pair{"fixed": rep.Fixed, "saturation": rep.Saturation, "stream": rep.Stream} {
		if p == nil {
			t.Fatalf("%s: no result", name)
		}
		for side, s := range map[string]Stats{"A": p.A, "B": p.B} {
			if s.OK == 0 || s.OK != s.Requests {
				t.Errorf("%s %s: %d of %d requests succeeded", name, side, s.OK, s.Requests)
			}
			if s.P50 <= 0 || s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.Max {
				t.Errorf("%s %s: quantiles out of order: %v %v %v %v", name, side, s.P50, s.P90, s.P99, s.Max)
			}
		}
		if len(p.Rounds) != cfg.Rounds {
			t.Errorf("%s: %d rounds compared, want %d", name, len(p.Rounds), cfg.Rounds)
		}
	}
	// At a fixed rate the count is the rate times the time, within the
	// pacer's rounding (two rounds of 0.5 s at 100/s).
	if n := rep.Fixed.A.Requests; n < 90 || n > 110 {
		t.Errorf("fixed A: %d requests, want about 100", n)
	}
	// A stream's first byte can't come before the upstream's first event.
	if rep.Stream.A.P50 < cfg.StreamFirstDelay || rep.Stream.B.P50 < cfg.StreamFirstDelay {
		t.Errorf("TTFB p50 %v / %v below the upstream's first-event delay %v", rep.Stream.A.P50, rep.Stream.B.P50, cfg.StreamFirstDelay)
	}
	if rep.MemBefore.RSSKiB <= 0 || rep.MemAfter.RSSKiB <= 0 {
		t.Errorf("no RSS: %+v %+v", rep.MemBefore, rep.MemAfter)
	}

	out := table.String()
	for _, row := range []string{
		"fixed 100/s", "saturation 4w", "stream 40/s TTFB", "A plain", "B llm_spend",
		"added latency p50 (B-A)", "added latency p90 (B-A)", "added latency p99 (B-A)", "added heap per request (B-A)", "heap B/req",
		"saturation throughput B/A", "stream TTFB p50 B/A", "stream TTFB p99 B/A",
		"RSS before load", "RSS after load",
	} {
		if !strings.Contains(out, row) {
			t.Errorf("table has no %q row", row)
		}
	}
	for _, c := range rep.Checks {
		if c.Measured == "" || strings.Contains(c.Measured, "NaN") {
			t.Errorf("check %q measured %q", c.Name, c.Measured)
		}
	}

	var html bytes.Buffer
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	h := html.String()
	for _, want := range []string{"<svg", "added latency p50", "<iframe srcdoc=", "uPlot"} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML report has no %q", want)
		}
	}
	if strings.Contains(h, `src="http`) || strings.Contains(h, `href="http`) {
		t.Error("HTML report loads something from the network; it must be self-contained")
	}
}

// TestEnvChecksSites: Start proves B has llm_spend in its path and A
// doesn't; a second Env can't start while one runs (Caddy is a singleton).
func TestEnvChecksSites(t *testing.T) {
	env, err := Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	if !strings.HasPrefix(env.Key, "sk-") {
		t.Fatalf("key %q", env.Key)
	}
	if _, err := Start(context.Background(), t.TempDir()); err == nil {
		t.Fatal("a second Env started beside the first")
	}
	for _, want := range []string{"llm_spend\n", "llm_spend_admin", "admin off", "127.0.0.1"} {
		if !strings.Contains(env.Caddyfile, want) {
			t.Errorf("Caddyfile has no %q", want)
		}
	}
}

func TestQuantile(t *testing.T) {
	d := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x)
		}
		return out
	}
	s := d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {0.01, 1}, {1, 10}, {0, 1}} {
		if got := quantile(s, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("empty quantile")
	}
	if got := medianOf([]RoundDelta{{P50: 3}, {P50: 1}, {P50: 10}, {P50: 2}}, func(r RoundDelta) time.Duration { return r.P50 }); got != 2 {
		t.Errorf("median of 1,2,3,10 = %v, want 2 (2.5 truncated)", got)
	}
	if got := medianOf([]RoundDelta{{RPSRatio: 0.9}, {RPSRatio: 5}, {RPSRatio: 1}}, func(r RoundDelta) float64 { return r.RPSRatio }); got != 1 {
		t.Errorf("median ratio = %v, want 1", got)
	}
	if !math.IsNaN(ratio(1, 0)) {
		t.Error("ratio over zero should be NaN")
	}
}

// TestLong runs the default benchmark (about 80 s); it is for a person
// with time, not for CI: LLMSPEND_BENCH=1 go test -run TestLong -v ./loadtest
func TestLong(t *testing.T) {
	if os.Getenv("LLMSPEND_BENCH") == "" {
		t.Skip("set LLMSPEND_BENCH=1 to run the full benchmark")
	}
	cfg := Defaults()
	cfg.Logf = t.Logf
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	_ = rep.WriteTable(&table)
	t.Logf("\n%s", table.String())
	if n := rep.Errors(); n != 0 {
		t.Fatalf("%d requests failed", n)
	}
}

// TestStreamsNotHeldBack: through either site, a stream's first event
// reaches the client long before the stream ends. A gateway that holds
// the stream (a response wrapper that can't flush through Caddy's
// writers) delivers everything at the end and fails here.
func TestStreamsNotHeldBack(t *testing.T) {
	env, err := Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	env.Upstream.Set(func(s *fakeupstream.Server) {
		s.Chunks = 4
		s.ChunkDelay = 40 * time.Millisecond // the stream lasts >= 6 x 40 ms
	})
	c := newClient()
	defer c.CloseIdleConnections()
	for _, site := range []struct{ name, url string }{{"A plain", env.PlainURL}, {"B llm_spend", env.GatewayURL}} {
		ttfb, full, msg := streamOnce(context.Background(), c, site.url+chatPath, chatBody(true), requestHeader(env.Key))
		if msg != "" {
			t.Fatalf("%s: %s", site.name, msg)
		}
		if full < 200*time.Millisecond {
			t.Fatalf("%s: stream took %v, the upstream should make it last >= 240ms", site.name, full)
		}
		if ttfb > full/2 {
			t.Errorf("%s: first byte after %v of a %v stream: the stream is held back, not forwarded event by event", site.name, ttfb, full)
		}
	}
}

func TestUnknownWorkload(t *testing.T) {
	if _, err := Run(context.Background(), Config{Workloads: []string{"fixed", "nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("err = %v, want an unknown-workload error", err)
	}
}
