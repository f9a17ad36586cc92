package loadtest

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"slices"
	"strconv"
	"time"
)

// Stats summarises one target in one workload, over all its rounds.
type Stats struct {
	Requests int            // requests sent
	OK       int            // 200 with the expected body
	Errors   map[string]int // everything else, by message
	// Wall is the summed time of the rounds, first request sent to last
	// answer received.
	Wall time.Duration
	// RPS is successful requests per second of Wall.
	RPS float64
	// Latency quantiles of the successful requests (for streaming: time to
	// first byte), exact, not estimated.
	P50, P90, P99, Max time.Duration
	// Total is the full duration of streams (streaming workload only).
	TotalP50 time.Duration
	// AllocBytes and Allocs are the whole process's heap allocations per
	// request during the rounds (client, Caddy, upstream): B minus A is
	// what the handler allocates, the garbage a gateway's GC pays for.
	AllocBytes, Allocs float64

	lat []time.Duration // sorted
}

// round is what one run of one workload against one target produced.
type round struct {
	lat, total []time.Duration
	requests   int
	ok         int
	errors     map[string]int
	wall       time.Duration
	// heap allocations of the whole process during the round
	allocBytes, allocs uint64
}

func (r *round) fail(msg string) {
	if r.errors == nil {
		r.errors = map[string]int{}
	}
	// Bound the distinct messages: they may carry variable text.
	if _, seen := r.errors[msg]; !seen && len(r.errors) >= 20 {
		msg = "(other errors)"
	}
	r.errors[msg]++
}

// merge pools rounds into Stats.
func merge(rounds []round) Stats {
	var s Stats
	var total []time.Duration
	var allocBytes, allocs uint64
	for _, r := range rounds {
		allocBytes += r.allocBytes
		allocs += r.allocs
		s.Requests += r.requests
		s.OK += r.ok
		s.Wall += r.wall
		s.lat = append(s.lat, r.lat...)
		total = append(total, r.total...)
		for m, n := range r.errors {
			if s.Errors == nil {
				s.Errors = map[string]int{}
			}
			s.Errors[m] += n
		}
	}
	slices.Sort(s.lat)
	slices.Sort(total)
	if s.Wall > 0 {
		s.RPS = float64(s.OK) / s.Wall.Seconds()
	}
	s.P50, s.P90, s.P99 = quantile(s.lat, 0.50), quantile(s.lat, 0.90), quantile(s.lat, 0.99)
	if len(s.lat) > 0 {
		s.Max = s.lat[len(s.lat)-1]
	}
	s.TotalP50 = quantile(total, 0.50)
	if s.Requests > 0 {
		s.AllocBytes = float64(allocBytes) / float64(s.Requests)
		s.Allocs = float64(allocs) / float64(s.Requests)
	}
	return s
}

// ErrorCount is the number of failed requests.
func (s Stats) ErrorCount() int { return s.Requests - s.OK }

// Quantile returns the q-quantile of the successful latencies.
func (s Stats) Quantile(q float64) time.Duration { return quantile(s.lat, q) }

// quantile is the nearest-rank quantile of sorted: the smallest value with
// at least q of the samples at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	if i < 0 {
		i = 0
	}
	if i >= n {
		i = n - 1
	}
	return sorted[i]
}

// Memory is the process's resident set, from /proc/self/status (Linux);
// zero elsewhere. The gateway, the upstream and the load generator are one
// process, so this bounds the gateway's footprint from above.
type Memory struct {
	RSSKiB  int64 // VmRSS
	PeakKiB int64 // VmHWM, the high-water mark since start
}

func readMemory() Memory {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return Memory{}
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.RSSKiB
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &m.PeakKiB
		default:
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) >= 2 {
			*dst, _ = strconv.ParseInt(string(fields[1]), 10, 64)
		}
	}
	return m
}

// roundSummary is one round's figures, for the per-round comparison.
type roundSummary struct {
	p50, p90, p99 time.Duration
	rps           float64
}

func (r *round) summary() roundSummary {
	s := slices.Clone(r.lat)
	slices.Sort(s)
	out := roundSummary{p50: quantile(s, 0.5), p90: quantile(s, 0.9), p99: quantile(s, 0.99)}
	if r.wall > 0 {
		out.rps = float64(r.ok) / r.wall.Seconds()
	}
	return out
}

func delta(a, b roundSummary) RoundDelta {
	return RoundDelta{
		P50: b.p50 - a.p50, P90: b.p90 - a.p90, P99: b.p99 - a.p99,
		RPSRatio: ratio(b.rps, a.rps),
		P50Ratio: ratio(float64(b.p50), float64(a.p50)),
		P99Ratio: ratio(float64(b.p99), float64(a.p99)),
	}
}

// medianOf returns the median of the values f picks from rounds.
func medianOf[T int64 | float64 | time.Duration](rounds []RoundDelta, f func(RoundDelta) T) T {
	if len(rounds) == 0 {
		var zero T
		return zero
	}
	v := make([]T, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
