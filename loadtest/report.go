package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets the gateway is held to (ARCHITECTURE / issue 8).
const (
	TargetAddedP50      = 50 * time.Microsecond
	TargetAddedP99      = 250 * time.Microsecond
	TargetSatRatio      = 0.90
	TargetTTFBRatio     = 1.05
	targetRateTolerance = 0.95 // the fixed rate counts as held at >= 95%
)

// Pair is one workload's result for A (plain Caddy) and B (the gateway).
// A and B pool every round; the comparisons (Added*, *Ratio) are medians of
// the per-round comparisons, since A and B of one round ran back to back
// under the same machine conditions, and one disturbed round cannot move
// a median far.
type Pair struct {
	A, B   Stats
	Rounds []RoundDelta
}

// RoundDelta is B against A in one round.
type RoundDelta struct {
	P50, P90, P99      time.Duration // B-A
	RPSRatio           float64       // B/A throughput
	P50Ratio, P99Ratio float64       // B/A latency (TTFB for streaming)
}

// AddedP50 is the median over rounds of B's p50 minus A's.
func (p *Pair) AddedP50() time.Duration {
	return medianOf(p.Rounds, func(d RoundDelta) time.Duration { return d.P50 })
}

// AddedP90 is the median over rounds of B's p90 minus A's.
func (p *Pair) AddedP90() time.Duration {
	return medianOf(p.Rounds, func(d RoundDelta) time.Duration { return d.P90 })
}

// AddedP99 is the median over rounds of B's p99 minus A's.
func (p *Pair) AddedP99() time.Duration {
	return medianOf(p.Rounds, func(d RoundDelta) time.Duration { return d.P99 })
}

// RPSRatio is the median over rounds of B's throughput over A's.
func (p *Pair) RPSRatio() float64 {
	return medianOf(p.Rounds, func(d RoundDelta) float64 { return d.RPSRatio })
}

// P50Ratio is the median over rounds of B's p50 over A's.
func (p *Pair) P50Ratio() float64 {
	return medianOf(p.Rounds, func(d RoundDelta) float64 { return d.P50Ratio })
}

// P99Ratio is the median over rounds of B's p99 over A's.
func (p *Pair) P99Ratio() float64 {
	return medianOf(p.Rounds, func(d RoundDelta) float64 { return d.P99Ratio })
}

func ratio(b, a float64) float64 {
	if a == 0 {
		return math.NaN()
	}
	return b / a
}

// Machine describes where the numbers were taken.
type Machine struct {
	NumCPU, GOMAXPROCS  int
	GoVersion, OS, Arch string
	// GOGC is the process's GC percent during the run (-1: off).
	GOGC int
}

// Check is a target and whether the run met it.
type Check struct {
	Name     string
	Measured string // the median over rounds
	Target   string // empty: informational
	Met      bool
	Spread   string // interquartile range of the per-round values
}

// Report is the outcome of Run.
type Report struct {
	Config  Config
	Machine Machine
	// Nil when the workload did not run.
	Fixed, Saturation, Stream *Pair
	MemBefore, MemAfter       Memory
	Noise                     Noise
	Checks                    []Check

	plots []namedPlot
}

type namedPlot struct{ title, html string }

func newReport(cfg Config) *Report {
	return &Report{
		Config: cfg,
		Machine: Machine{
			NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
			GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			GOGC: gcPercent(),
		},
	}
}

// gcPercent reads the GC percent (SetGCPercent is the only reader; the
// collector is off for the instant between the two calls).
func gcPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	return p
}

// Errors is the number of failed requests over every workload and target.
func (r *Report) Errors() int {
	n := 0
	for _, p := range r.pairs() {
		n += p.A.ErrorCount() + p.B.ErrorCount()
	}
	return n
}

// Missed lists the targets the run did not meet.
func (r *Report) Missed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Target != "" && !c.Met {
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) pairs() []*Pair {
	var out []*Pair
	for _, p := range []*Pair{r.Fixed, r.Saturation, r.Stream} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (r *Report) evaluate() {
	add := func(name, measured, target string, met bool) {
		r.Checks = append(r.Checks, Check{Name: name, Measured: measured, Target: target, Met: met, Spread: r.spread(name)})
	}
	if p := r.Fixed; p != nil {
		add(fmt.Sprintf("fixed rate held (A, B of %d/s)", r.Config.Rate),
			fmt.Sprintf("%.0f, %.0f", p.A.RPS, p.B.RPS),
			fmt.Sprintf(">= %.0f", targetRateTolerance*float64(r.Config.Rate)),
			p.A.RPS >= targetRateTolerance*float64(r.Config.Rate) && p.B.RPS >= targetRateTolerance*float64(r.Config.Rate))
		add("added latency p50 (B-A)", signed(p.AddedP50()), "<= +"+dur(TargetAddedP50), p.AddedP50() <= TargetAddedP50)
		add("added latency p90 (B-A)", signed(p.AddedP90()), "", false)
		add("added latency p99 (B-A)", signed(p.AddedP99()), "<= +"+dur(TargetAddedP99), p.AddedP99() <= TargetAddedP99)
		add("added heap per request (B-A)", fmt.Sprintf("%+.0f B, %+.1f allocs", p.B.AllocBytes-p.A.AllocBytes, p.B.Allocs-p.A.Allocs), "", false)
	}
	if p := r.Saturation; p != nil {
		add("saturation throughput B/A", fmt.Sprintf("%.3f", p.RPSRatio()), fmt.Sprintf(">= %.2f", TargetSatRatio), p.RPSRatio() >= TargetSatRatio)
		add("saturation added p50 (B-A)", signed(p.AddedP50()), "", false)
	}
	if p := r.Stream; p != nil {
		add("stream TTFB p50 B/A", fmt.Sprintf("%.3f", p.P50Ratio()), fmt.Sprintf("<= %.2f", TargetTTFBRatio), p.P50Ratio() <= TargetTTFBRatio)
		add("stream TTFB p99 B/A", fmt.Sprintf("%.3f", p.P99Ratio()), "", false)
		add("stream TTFB added p50 (B-A)", signed(p.AddedP50()), "", false)
	}
}

// dur formats a latency at a precision that suits it.
func dur(d time.Duration) string {
	a := d
	if a < 0 {
		a = -a
	}
	switch {
	case a < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case a < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + dur(d)
	}
	return dur(d)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// WriteTable prints the report as aligned text tables.
func (r *Report) WriteTable(w io.Writer) error {
	c := r.Config
	m := r.Machine
	order := "A then B"
	if c.Mirror {
		order = "AB, BA alternating"
	}
	fmt.Fprintf(w, "llmspend-bench: nproc=%d GOMAXPROCS=%d GOGC=%d %s %s/%s, %d rounds per workload (%s), one process\n",
		m.NumCPU, m.GOMAXPROCS, m.GOGC, m.GoVersion, m.OS, m.Arch, c.Rounds, order)
	fmt.Fprintf(w, "A = Caddy reverse_proxy; B = llm_spend + reverse_proxy (same routes, same upstream)\n")
	if r.Noise.OtherCPUs >= 0 {
		fmt.Fprintf(w, "machine during the run: this process %.2f CPUs, other processes %.2f CPUs, load average %.2f\n",
			r.Noise.OwnCPUs, r.Noise.OtherCPUs, r.Noise.LoadAvg)
		if r.Noise.Noisy() {
			fmt.Fprintf(w, "WARNING: other processes were using the CPUs; numbers are noisy, run again on a quiet machine\n")
		}
	}
	fmt.Fprintf(w, "comparisons are medians over rounds of B against A in the same round\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\ttarget\trequests\terrors\trps\tp50\tp90\tp99\tmax\theap B/req\tallocs/req\t")
	row := func(label string, p *Pair) {
		for _, s := range []struct {
			name string
			st   Stats
		}{{"A plain", p.A}, {"B llm_spend", p.B}} {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%.0f\t%.1f\t\n", label, s.name, s.st.Requests, s.st.ErrorCount(), s.st.RPS,
				dur(s.st.P50), dur(s.st.P90), dur(s.st.P99), dur(s.st.Max), s.st.AllocBytes, s.st.Allocs)
		}
	}
	if r.Fixed != nil {
		row(fmt.Sprintf("fixed %d/s", c.Rate), r.Fixed)
	}
	if r.Saturation != nil {
		row(fmt.Sprintf("saturation %dw", c.SatWorkers), r.Saturation)
	}
	if r.Stream != nil {
		row(fmt.Sprintf("stream %d/s TTFB", c.StreamRate), r.Stream)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "comparison\tmedian\ttarget\tresult\trounds IQR\tper round\t")
	for _, ch := range r.Checks {
		res := "-"
		if ch.Target != "" {
			res = "MET"
			if !ch.Met {
				res = "MISSED"
			}
		}
		target := ch.Target
		if target == "" {
			target = "-"
		}
		spread := ch.Spread
		if spread == "" {
			spread = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", ch.Name, ch.Measured, target, res, spread, r.perRound(ch.Name))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "process (gateway + upstream + load generator)\t\t")
	fmt.Fprintf(tw, "RSS before load\t%s\t\n", mib(r.MemBefore.RSSKiB))
	fmt.Fprintf(tw, "RSS after load\t%s\t\n", mib(r.MemAfter.RSSKiB))
	fmt.Fprintf(tw, "RSS peak (VmHWM)\t%s\t\n", mib(r.MemAfter.PeakKiB))
	if r.Stream != nil {
		fmt.Fprintf(tw, "stream full duration p50 A, B\t%s, %s\t\n", dur(r.Stream.A.TotalP50), dur(r.Stream.B.TotalP50))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		p    *Pair
	}{{"fixed", r.Fixed}, {"saturation", r.Saturation}, {"stream", r.Stream}} {
		if p.p == nil {
			continue
		}
		for _, st := range []struct {
			t string
			s Stats
		}{{"A", p.p.A}, {"B", p.p.B}} {
			for msg, n := range st.s.Errors {
				fmt.Fprintf(w, "error %s %s: %d x %s\n", p.name, st.t, n, msg)
			}
		}
	}
	return nil
}

// roundValues returns the per-round values behind a comparison, as
// numbers (nanoseconds or ratios) and formatted.
func (r *Report) roundValues(check string) ([]float64, func(float64) string) {
	var p *Pair
	var pick func(RoundDelta) float64
	ns := func(v float64) string { return signed(time.Duration(v)) }
	r2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	r3 := func(v float64) string { return fmt.Sprintf("%.3f", v) }
	format := ns
	switch check {
	case "added latency p50 (B-A)":
		p, pick = r.Fixed, func(d RoundDelta) float64 { return float64(d.P50) }
	case "added latency p90 (B-A)":
		p, pick = r.Fixed, func(d RoundDelta) float64 { return float64(d.P90) }
	case "added latency p99 (B-A)":
		p, pick = r.Fixed, func(d RoundDelta) float64 { return float64(d.P99) }
	case "saturation throughput B/A":
		p, pick, format = r.Saturation, func(d RoundDelta) float64 { return d.RPSRatio }, r2
	case "saturation added p50 (B-A)":
		p, pick = r.Saturation, func(d RoundDelta) float64 { return float64(d.P50) }
	case "stream TTFB p50 B/A":
		p, pick, format = r.Stream, func(d RoundDelta) float64 { return d.P50Ratio }, r3
	case "stream TTFB p99 B/A":
		p, pick, format = r.Stream, func(d RoundDelta) float64 { return d.P99Ratio }, r3
	case "stream TTFB added p50 (B-A)":
		p, pick = r.Stream, func(d RoundDelta) float64 { return float64(d.P50) }
	}
	if p == nil {
		return nil, nil
	}
	v := make([]float64, len(p.Rounds))
	for i, d := range p.Rounds {
		v[i] = pick(d)
	}
	return v, format
}

// perRound shows the per-round values behind a comparison, in run order.
func (r *Report) perRound(check string) string {
	v, f := r.roundValues(check)
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = f(x)
	}
	return strings.Join(parts, " ")
}

// spread is the interquartile range of the per-round values: how far
// the rounds disagree, i.e. how much to trust the median.
func (r *Report) spread(check string) string {
	v, f := r.roundValues(check)
	if len(v) < 2 {
		return ""
	}
	v = slices.Clone(v)
	slices.Sort(v)
	q := func(p float64) float64 { return v[int(math.Round(p*float64(len(v)-1)))] }
	return f(q(0.25)) + ".." + f(q(0.75))
}

// WriteHTML writes a self-contained HTML page: the tables, a bar chart of
// the latency quantiles per workload and vegeta's latency-over-time plots
// (when Config.Plots was set), each embedded with its own scripts.
func (r *Report) WriteHTML(w io.Writer) error {
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		return err
	}
	type chart struct {
		Title string
		SVG   template.HTML
	}
	var charts []chart
	for _, p := range []struct {
		title string
		p     *Pair
	}{
		{fmt.Sprintf("fixed %d/s: latency", r.Config.Rate), r.Fixed},
		{fmt.Sprintf("saturation, %d workers: latency", r.Config.SatWorkers), r.Saturation},
		{fmt.Sprintf("streaming %d/s: time to first byte", r.Config.StreamRate), r.Stream},
	} {
		if p.p != nil {
			charts = append(charts, chart{p.title, barChart(p.p)})
		}
	}
	type plotView struct {
		Title string
		Doc   string // a whole HTML document, put in srcdoc (escaped by the template)
	}
	var plots []plotView
	for _, p := range r.plots {
		plots = append(plots, plotView{p.title, p.html})
	}
	return htmlTemplate.Execute(w, map[string]any{
		"Table":  table.String(),
		"Charts": charts,
		"Plots":  plots,
	})
}

// barChart draws p50/p90/p99 of A and B as grouped bars. Only numbers and
// fixed labels go into the markup.
func barChart(p *Pair) template.HTML {
	const wd, ht, left, bottom, top = 560.0, 260.0, 70.0, 40.0, 20.0
	qs := []struct {
		name string
		a, b time.Duration
	}{{"p50", p.A.P50, p.B.P50}, {"p90", p.A.P90, p.B.P90}, {"p99", p.A.P99, p.B.P99}}
	var maxV time.Duration
	for _, q := range qs {
		maxV = max(maxV, q.a, q.b)
	}
	if maxV <= 0 {
		maxV = 1
	}
	plotH := ht - bottom - top
	y := func(d time.Duration) float64 { return top + plotH*(1-float64(d)/float64(maxV)) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`, wd, ht)
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, left, top, left, ht-bottom)
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, left, ht-bottom, wd-10, ht-bottom)
	for i := 0; i <= 4; i++ {
		v := maxV * time.Duration(i) / 4
		fmt.Fprintf(&sb, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, left-6, y(v)+4, template.HTMLEscapeString(dur(v)))
		fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`, left, y(v), wd-10, y(v))
	}
	group := (wd - left - 10) / float64(len(qs))
	barW := group / 3
	for i, q := range qs {
		x0 := left + float64(i)*group + barW/2
		for j, v := range []time.Duration{q.a, q.b} {
			color := "#999"
			if j == 1 {
				color = "#2a6fdb"
			}
			x := x0 + float64(j)*barW
			fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
				x, y(v), barW-4, ht-bottom-y(v), color, template.HTMLEscapeString(dur(v)))
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`, x+barW/2-2, y(v)-3, template.HTMLEscapeString(dur(v)))
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, x0+barW, ht-bottom+16, q.name)
	}
	fmt.Fprintf(&sb, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="#999"/><text x="%.0f" y="%.0f">A plain Caddy</text>`, left+10, ht-14, left+24, ht-5)
	fmt.Fprintf(&sb, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="#2a6fdb"/><text x="%.0f" y="%.0f">B llm_spend</text>`, left+140, ht-14, left+154, ht-5)
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

var htmlTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llmspend-bench</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}pre{background:#f6f6f6;padding:1em;overflow:auto}
iframe{width:100%;height:760px;border:1px solid #ccc}.charts{display:flex;flex-wrap:wrap;gap:1em}</style></head>
<body>
<h1>llmspend-bench</h1>
<p>A is Caddy's reverse_proxy; B is the same site with llm_spend in front of reverse_proxy. Same upstream, same process, alternating rounds.</p>
<pre>{{.Table}}</pre>
<div class="charts">{{range .Charts}}<figure><figcaption>{{.Title}}</figcaption>{{.SVG}}</figure>{{end}}</div>
{{range .Plots}}<h2>{{.Title}}</h2><iframe srcdoc="{{.Doc}}" sandbox="allow-scripts"></iframe>{{end}}
</body></html>
`))
