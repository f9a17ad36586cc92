package sqlcodec

import (
	"math"
	"testing"
	"time"
)

// FuzzTimeRoundTrip checks the time encoding every budget window goes
// through: exact for every representable instant, UTC, zero stays zero,
// and out-of-range instants clamp in the right direction.
func FuzzTimeRoundTrip(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(1767225600), int64(123456789))
	f.Add(int64(-1), int64(999999999))
	f.Add(int64(math.MaxInt64/1_000_000_000+1), int64(0))
	f.Add(int64(253402300799), int64(0)) // 9999-12-31
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		in := time.Unix(sec, nsec%1e9).In(time.FixedZone("Z", 3600))
		n := Nanos(in)
		out := FromNanos(n)
		switch {
		case in.IsZero():
			if n != 0 || !out.IsZero() {
				t.Fatalf("zero time encoded as %d, decoded %v", n, out)
			}
		case in.Before(minTime):
			if n != math.MinInt64+1 {
				t.Fatalf("%v below range encoded as %d", in, n)
			}
		case in.After(maxTime):
			if n != math.MaxInt64 {
				t.Fatalf("%v above range encoded as %d", in, n)
			}
		case n == 0:
			// The Unix epoch itself reads back as the zero time (documented).
			if !in.Equal(time.Unix(0, 0)) || !out.IsZero() {
				t.Fatalf("%v encoded as 0", in)
			}
		default:
			if !out.Equal(in) || out.Location() != time.UTC {
				t.Fatalf("%v round-tripped to %v", in, out)
			}
		}
	})
}
