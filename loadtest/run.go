package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/tsenart/vegeta/v12/lib/plot"

	"github.com/llmspend/llmspend/fakeupstream"
)

// Workload names, for Config.Workloads.
const (
	Fixed      = "fixed"
	Saturation = "saturation"
	Streaming  = "stream"
)

// Config is one benchmark run. The zero value of a field means its default
// (see Defaults).
type Config struct {
	Workloads []string // subset of Fixed, Saturation, Streaming; empty = all
	Rounds    int      // rounds per workload; each round runs A then B
	Warmup    time.Duration
	// Mirror runs every second round B then A (AB BA AB ...), so that
	// whatever favours the first (or second) run of a round falls on
	// both targets equally.
	Mirror bool

	// Fixed: non-streaming chat completions at Rate per second for
	// Duration per round.
	Rate     int
	Duration time.Duration
	// MaxWorkers bounds vegeta's workers at a fixed rate (a stalled target
	// can't make it spawn goroutines without end).
	MaxWorkers int

	// Saturation: SatWorkers closed-loop workers, as fast as they go, for
	// SatDuration per round.
	SatWorkers  int
	SatDuration time.Duration

	// Streaming: streams started at StreamRate per second (open loop, at
	// most StreamConcurrency in flight) for StreamDuration per round. The
	// upstream waits StreamFirstDelay before the first event (a model's
	// time to first token) and StreamChunkDelay between StreamChunks
	// content events.
	StreamRate        int
	StreamDuration    time.Duration
	StreamConcurrency int
	StreamChunks      int
	StreamFirstDelay  time.Duration
	StreamChunkDelay  time.Duration

	// UpstreamLatency delays every upstream answer (0: as fast as it goes).
	UpstreamLatency time.Duration

	// Plots collects per-request points for the HTML report.
	Plots bool
	// Dir holds the store and Caddy's data; empty = a temporary directory.
	Dir string
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

// Defaults returns the default configuration: about 75 s of load. Many
// short rounds rather than a few long ones: the finer A and B interleave,
// the better noise from the rest of the machine falls on both alike.
func Defaults() Config {
	return Config{
		Workloads:         []string{Fixed, Saturation, Streaming},
		Rounds:            6,
		Warmup:            time.Second,
		Rate:              1000,
		Duration:          2500 * time.Millisecond,
		MaxWorkers:        512,
		SatWorkers:        16,
		SatDuration:       1500 * time.Millisecond,
		StreamRate:        100,
		StreamDuration:    1500 * time.Millisecond,
		StreamConcurrency: 64,
		StreamChunks:      8,
		StreamFirstDelay:  20 * time.Millisecond,
		StreamChunkDelay:  5 * time.Millisecond,
	}
}

// withDefaults fills zero fields from Defaults.
func (c Config) withDefaults() Config {
	d := Defaults()
	if len(c.Workloads) == 0 {
		c.Workloads = d.Workloads
	}
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.Rounds, d.Rounds)
	set(&c.Rate, d.Rate)
	set(&c.MaxWorkers, d.MaxWorkers)
	set(&c.SatWorkers, d.SatWorkers)
	set(&c.StreamRate, d.StreamRate)
	set(&c.StreamConcurrency, d.StreamConcurrency)
	set(&c.StreamChunks, d.StreamChunks)
	setD(&c.Duration, d.Duration)
	setD(&c.SatDuration, d.SatDuration)
	setD(&c.StreamDuration, d.StreamDuration)
	// Warmup and the stream delays may legitimately be zero: negative
	// means zero, and only an unset (zero) Config gets the defaults.
	return c
}

func (c Config) validate() error {
	for _, w := range c.Workloads {
		if w != Fixed && w != Saturation && w != Streaming {
			return fmt.Errorf("unknown workload %q (want %s, %s or %s)", w, Fixed, Saturation, Streaming)
		}
	}
	return nil
}

func (c Config) has(w string) bool { return slices.Contains(c.Workloads, w) }

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Run starts an Env, runs the configured workloads and stops it.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.withDefaults().validate(); err != nil {
		return nil, err
	}
	env, err := Start(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	return env.Run(ctx, cfg)
}

// target is one side of the comparison.
type target struct {
	name   string // "A" or "B"
	url    string
	client *http.Client
}

// newClient returns a loopback-only client with its own connection pool,
// kept across rounds so that every round starts with warm connections.
func newClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy: nil, // never an environment proxy: loopback only
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil || !net.ParseIP(host).IsLoopback() {
					return nil, fmt.Errorf("loadtest: refusing non-loopback address %q", addr)
				}
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 4096,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// Run runs the configured workloads against e's two sites.
func (e *Env) Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := newReport(cfg)
	a := target{name: "A", url: e.PlainURL, client: newClient()}
	b := target{name: "B", url: e.GatewayURL, client: newClient()}
	defer a.client.CloseIdleConnections()
	defer b.client.CloseIdleConnections()
	e.Upstream.Set(func(s *fakeupstream.Server) {
		s.Latency = cfg.UpstreamLatency
		s.Chunks = cfg.StreamChunks
		s.ChunkDelay = max(cfg.StreamChunkDelay, 0)
		s.FirstChunkDelay = max(cfg.StreamFirstDelay, 0)
	})
	runtime.GC()
	rep.MemBefore = readMemory()
	cpu0 := sampleCPU()

	type workload struct {
		name  string
		title string
		run   func(ctx context.Context, t target, name string, d time.Duration, p *plot.Plot) round
		dur   time.Duration
		out   *Pair
	}
	var wls []workload
	if cfg.has(Fixed) {
		rep.Fixed = &Pair{}
		wls = append(wls, workload{Fixed, fmt.Sprintf("fixed rate %d/s, non-streaming", cfg.Rate), func(ctx context.Context, t target, name string, d time.Duration, p *plot.Plot) round {
			per := time.Second
			pacer := vegeta.Rate{Freq: cfg.Rate, Per: per}
			maxHits := uint64(float64(cfg.Rate)*d.Seconds()*1.05) + 10
			return e.attack(ctx, t, name, pacer, 10, uint64(cfg.MaxWorkers), d, maxHits, p)
		}, cfg.Duration, rep.Fixed})
	}
	if cfg.has(Saturation) {
		rep.Saturation = &Pair{}
		wls = append(wls, workload{Saturation, fmt.Sprintf("saturation, %d workers, non-streaming", cfg.SatWorkers), func(ctx context.Context, t target, name string, d time.Duration, p *plot.Plot) round {
			// Freq 0 is vegeta's "as fast as possible": the workers bound it.
			w := uint64(cfg.SatWorkers)
			maxHits := uint64(200_000 * d.Seconds()) // far above what loopback does
			return e.attack(ctx, t, name, vegeta.Rate{Freq: 0}, w, w, d, maxHits, p)
		}, cfg.SatDuration, rep.Saturation})
	}
	if cfg.has(Streaming) {
		rep.Stream = &Pair{}
		wls = append(wls, workload{Streaming, fmt.Sprintf("streaming %d/s, TTFB", cfg.StreamRate), func(ctx context.Context, t target, name string, d time.Duration, p *plot.Plot) round {
			return e.stream(ctx, t, name, cfg, d, p)
		}, cfg.StreamDuration, rep.Stream})
	}

	for _, wl := range wls {
		var pl *plot.Plot
		if cfg.Plots {
			pl = plot.New(plot.Title(wl.title+": latency per request (ms)"), plot.Downsample(600), plot.Label(func(*vegeta.Result) string { return "" }))
		}
		if cfg.Warmup > 0 {
			for _, t := range []target{a, b} {
				r := wl.run(ctx, t, "warmup", cfg.Warmup, nil)
				cfg.logf("%-10s warmup %s: %d requests, %d errors", wl.name, t.name, r.requests, r.requests-r.ok)
			}
		}
		var ra, rb []round
		for i := 1; i <= cfg.Rounds; i++ {
			order := []target{a, b}
			if cfg.Mirror && i%2 == 0 {
				order = []target{b, a}
			}
			for _, t := range order {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				// Each round starts from a collected heap, so that a GC
				// cycle left over from the previous round doesn't land on
				// the next target.
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				r := wl.run(ctx, t, fmt.Sprintf("%s r%d", t.name, i), wl.dur, pl)
				runtime.ReadMemStats(&m1)
				r.allocBytes, r.allocs = m1.TotalAlloc-m0.TotalAlloc, m1.Mallocs-m0.Mallocs
				sum := r.summary()
				cfg.logf("%-10s round %d %s: %d requests, %d errors, %.0f/s, p50 %s p99 %s", wl.name, i, t.name,
					r.requests, r.requests-r.ok, sum.rps, dur(sum.p50), dur(sum.p99))
				if t.name == "A" {
					ra = append(ra, r)
				} else {
					rb = append(rb, r)
				}
			}
		}
		wl.out.A, wl.out.B = merge(ra), merge(rb)
		for i := range ra {
			wl.out.Rounds = append(wl.out.Rounds, delta(ra[i].summary(), rb[i].summary()))
		}
		if pl != nil {
			pl.Close()
			var buf bytes.Buffer
			if _, err := pl.WriteTo(&buf); err != nil {
				return nil, fmt.Errorf("plot: %w", err)
			}
			rep.plots = append(rep.plots, namedPlot{wl.title, buf.String()})
		}
	}
	rep.MemAfter = readMemory()
	rep.Noise = noiseBetween(cpu0, sampleCPU())
	rep.evaluate()
	return rep, nil
}

// cappedPacer stops an attack after max hits, whatever the base pacer says:
// every vegeta loop is bounded in count as well as in time.
type cappedPacer struct {
	base vegeta.Pacer
	max  uint64
}

func (p cappedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= p.max {
		return 0, true
	}
	return p.base.Pace(elapsed, hits)
}

func (p cappedPacer) Rate(elapsed time.Duration) float64 { return p.base.Rate(elapsed) }

// attack runs one vegeta attack of non-streaming chat completions.
func (e *Env) attack(ctx context.Context, t target, name string, pacer vegeta.Pacer, workers, maxWorkers uint64, d time.Duration, maxHits uint64, pl *plot.Plot) round {
	atk := vegeta.NewAttacker(vegeta.Client(t.client), vegeta.Workers(workers), vegeta.MaxWorkers(maxWorkers))
	tr := vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost,
		URL:    t.url + chatPath,
		Body:   chatBody(false),
		Header: requestHeader(e.Key),
	})
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	// A hard deadline on top of vegeta's own duration check, in case a
	// target stops answering.
	timer := time.AfterFunc(d+35*time.Second, func() { atk.Stop() })
	defer timer.Stop()

	var r round
	r.lat = make([]time.Duration, 0, min(maxHits, 1<<20))
	var first, last time.Time
	for res := range atk.Attack(tr, cappedPacer{pacer, maxHits}, d, name) {
		r.requests++
		if first.IsZero() || res.Timestamp.Before(first) {
			first = res.Timestamp
		}
		if end := res.End(); end.After(last) {
			last = end
		}
		switch {
		case res.Error != "":
			r.fail(res.Error)
		case res.Code != http.StatusOK:
			r.fail(fmt.Sprintf("status %d", res.Code))
		case !bytes.Contains(res.Body, []byte(okMarker)):
			r.fail("unexpected body: " + truncate(string(res.Body), 80))
		default:
			r.ok++
			r.lat = append(r.lat, res.Latency)
		}
		if pl != nil {
			res.Body = nil
			_ = pl.Add(res)
		}
	}
	if !first.IsZero() {
		r.wall = last.Sub(first)
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// stream runs the streaming workload: an open loop that starts streams on
// a fixed schedule (so a slow target can't slow the offered load), at most
// StreamConcurrency at once, and records for each the time from sending
// the request to the first byte of the body (the first event).
func (e *Env) stream(ctx context.Context, t target, name string, cfg Config, d time.Duration, pl *plot.Plot) round {
	n := int(float64(cfg.StreamRate)*d.Seconds()) + 1
	interval := time.Second / time.Duration(cfg.StreamRate)
	perStream := 10*time.Second + cfg.StreamFirstDelay + time.Duration(cfg.StreamChunks+4)*cfg.StreamChunkDelay
	ctx, cancel := context.WithTimeout(ctx, d+perStream)
	defer cancel()

	type one struct {
		seq        int
		start      time.Time
		ttfb, full time.Duration
		err        string
	}
	results := make([]one, 0, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.StreamConcurrency)
	body := chatBody(true)
	hdr := requestHeader(e.Key)
	begin := time.Now()
loop:
	for i := 0; i < n; i++ {
		due := begin.Add(time.Duration(i) * interval)
		if due.Sub(begin) >= d {
			break
		}
		if w := time.Until(due); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func(seq int) {
			defer wg.Done()
			defer func() { <-sem }()
			o := one{seq: seq, start: time.Now()}
			o.ttfb, o.full, o.err = streamOnce(ctx, t.client, t.url+chatPath, body, hdr)
			mu.Lock()
			results = append(results, o)
			mu.Unlock()
		}(i)
	}
	wg.Wait()

	var r round
	var first, last time.Time
	slices.SortFunc(results, func(x, y one) int { return x.seq - y.seq })
	for _, o := range results {
		r.requests++
		if first.IsZero() || o.start.Before(first) {
			first = o.start
		}
		if end := o.start.Add(o.full); end.After(last) {
			last = end
		}
		if o.err != "" {
			r.fail(o.err)
		} else {
			r.ok++
			r.lat = append(r.lat, o.ttfb)
			r.total = append(r.total, o.full)
		}
		if pl != nil {
			_ = pl.Add(&vegeta.Result{Attack: name, Seq: uint64(o.seq), Timestamp: o.start, Latency: o.ttfb, Error: o.err, Code: 200})
		}
	}
	if !first.IsZero() {
		r.wall = last.Sub(first)
	}
	return r
}

// streamOnce sends one streaming request and reads the stream to its end.
// ttfb is the time until the first byte of the body, i.e. the first event;
// the stream must end with [DONE] to count.
func streamOnce(ctx context.Context, c *http.Client, url string, body []byte, hdr http.Header) (ttfb, full time.Duration, errMsg string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err.Error()
	}
	req.Header = hdr.Clone()
	t0 := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, time.Since(t0), errText(err)
	}
	defer res.Body.Close()
	var buf [4096]byte
	var got []byte
	for ttfb == 0 {
		n, err := res.Body.Read(buf[:])
		if n > 0 {
			ttfb = time.Since(t0)
			got = append(got, buf[:n]...)
		}
		if err != nil {
			if ttfb == 0 {
				return 0, time.Since(t0), "no body: " + errText(err)
			}
			break
		}
	}
	rest, err := io.ReadAll(res.Body)
	full = time.Since(t0)
	if err != nil {
		return ttfb, full, errText(err)
	}
	got = append(got, rest...)
	if res.StatusCode != http.StatusOK {
		return ttfb, full, fmt.Sprintf("status %d", res.StatusCode)
	}
	if !bytes.Contains(got, []byte(doneMarker)) {
		return ttfb, full, "stream without [DONE]"
	}
	return ttfb, full, ""
}

// errText drops the variable parts (URLs, ports) of a client error so the
// same failure counts once.
func errText(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && strings.Contains(err.Error(), "://") {
		if inner := ue.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return err.Error()
}
