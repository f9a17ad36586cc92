package loadtest

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Noise tells how busy the machine was with other work during a run: the
// benchmark measures ratios so that shared noise cancels, but a machine
// whose cores are taken by something else makes every number jumpy.
type Noise struct {
	// OtherCPUs is the CPU time used by other processes per second of
	// the run, in cores (0 on a quiet machine; NumCPU when they took
	// everything). Negative or zero when unknown.
	OtherCPUs float64
	// OwnCPUs is this process's CPU time per second of the run, in cores.
	OwnCPUs float64
	// LoadAvg is /proc/loadavg's 1-minute figure at the end.
	LoadAvg float64
}

// Noisy reports whether other processes took a noticeable share (a fifth
// of a core or more) of the machine during the run.
func (n Noise) Noisy() bool { return n.OtherCPUs >= 0.2 }

type cpuSample struct {
	at         time.Time
	busyJiffie int64 // machine-wide, all CPUs
	own        time.Duration
}

// clockTicks is USER_HZ, the unit of /proc/stat; 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), busyJiffie: -1}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.own = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return s
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(string(v), 10, 64)
		// user nice system idle iowait irq softirq steal ...: idle and
		// iowait are not work; guest time is already in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	s.busyJiffie = busy
	return s
}

func noiseBetween(a, b cpuSample) Noise {
	n := Noise{OtherCPUs: -1}
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return n
	}
	n.OwnCPUs = (b.own - a.own).Seconds() / wall
	if a.busyJiffie >= 0 && b.busyJiffie >= 0 {
		machine := float64(b.busyJiffie-a.busyJiffie) / clockTicks / wall
		n.OtherCPUs = max(machine-n.OwnCPUs, 0)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := bytes.Fields(b); len(f) > 0 {
			n.LoadAvg, _ = strconv.ParseFloat(string(f[0]), 64)
		}
	}
	return n
}
