// Command llmspend-bench measures what the llm_spend handler adds to plain
// Caddy. In one process it starts a fake upstream and one Caddy with two
// sites, (A) reverse_proxy and (B) llm_spend + reverse_proxy with a real
// virtual key, runs the same workloads against both in alternating rounds
// and prints a table (see docs/PERFORMANCE.md):
//
//	go run ./cmd/llmspend-bench                      # about 80 s
//	go run ./cmd/llmspend-bench -html bench.html     # plus an HTML report
//	go run ./cmd/llmspend-bench -workloads fixed -cpuprofile cpu.out
//
// Everything stays on 127.0.0.1 and stops by itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/llmspend/llmspend/loadtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "llmspend-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	d := loadtest.Defaults()
	workloads := flag.String("workloads", strings.Join(d.Workloads, ","), "comma-separated workloads: fixed, saturation, stream")
	rounds := flag.Int("rounds", d.Rounds, "rounds per workload; each round runs A then B")
	mirror := flag.Bool("mirror", d.Mirror, "run every second round B then A (AB BA ...) to cancel order effects")
	warmup := flag.Duration("warmup", d.Warmup, "unmeasured warm-up per workload and target (0 = none)")
	rate := flag.Int("rate", d.Rate, "fixed workload: requests per second")
	duration := flag.Duration("duration", d.Duration, "fixed workload: duration of a round")
	maxWorkers := flag.Int("max-workers", d.MaxWorkers, "fixed workload: bound on vegeta workers")
	satWorkers := flag.Int("sat-workers", d.SatWorkers, "saturation workload: closed-loop workers")
	satDuration := flag.Duration("sat-duration", d.SatDuration, "saturation workload: duration of a round")
	streamRate := flag.Int("stream-rate", d.StreamRate, "stream workload: streams started per second")
	streamDuration := flag.Duration("stream-duration", d.StreamDuration, "stream workload: duration of a round")
	streamConc := flag.Int("stream-concurrency", d.StreamConcurrency, "stream workload: bound on streams in flight")
	chunks := flag.Int("stream-chunks", d.StreamChunks, "stream workload: content events per stream")
	firstDelay := flag.Duration("stream-first-delay", d.StreamFirstDelay, "stream workload: upstream delay before the first event (time to first token)")
	chunkDelay := flag.Duration("stream-chunk-delay", d.StreamChunkDelay, "stream workload: upstream delay between events")
	upLatency := flag.Duration("upstream-latency", 0, "delay before every upstream answer")
	htmlOut := flag.String("html", "", "also write a self-contained HTML report to this file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof -top -focus caddymodule ...)")
	dir := flag.String("dir", "", "directory for the store and Caddy's data (default: a temporary one, removed at exit)")
	quiet := flag.Bool("q", false, "no progress lines")
	gogc := flag.Int("gogc", 400, "GC percent for the whole process; the load generator and the upstream share the gateway's heap and\n"+
		"would otherwise make GC run several times as often as in a gateway of its own (100 = Go's default)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	cfg := loadtest.Config{
		Workloads:         strings.Split(*workloads, ","),
		Rounds:            *rounds,
		Mirror:            *mirror,
		Warmup:            *warmup,
		Rate:              *rate,
		Duration:          *duration,
		MaxWorkers:        *maxWorkers,
		SatWorkers:        *satWorkers,
		SatDuration:       *satDuration,
		StreamRate:        *streamRate,
		StreamDuration:    *streamDuration,
		StreamConcurrency: *streamConc,
		StreamChunks:      *chunks,
		StreamFirstDelay:  *firstDelay,
		StreamChunkDelay:  *chunkDelay,
		UpstreamLatency:   *upLatency,
		Plots:             *htmlOut != "",
		Dir:               *dir,
	}
	if !*quiet {
		start := time.Now()
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}

	// Caddy's own data (instance id, autosave) goes to a temporary
	// directory too, never to the user's home.
	xdg, err := os.MkdirTemp("", "llmspend-bench-xdg")
	if err != nil {
		return err
	}
	defer os.RemoveAll(xdg)
	os.Setenv("XDG_DATA_HOME", xdg)
	os.Setenv("XDG_CONFIG_HOME", xdg)

	debug.SetGCPercent(*gogc)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	if *htmlOut != "" {
		f, err := os.Create(*htmlOut)
		if err != nil {
			return err
		}
		if err := rep.WriteHTML(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "HTML report: %s\n", *htmlOut)
	}
	if n := rep.Errors(); n > 0 {
		return fmt.Errorf("%d requests failed", n)
	}
	return nil
}
