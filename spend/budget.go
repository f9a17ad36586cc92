package spend

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// BudgetDuration is a parsed budget_duration: a fixed length ("30s", "30m",
// "1h", "1d", "7d", "30d") or a number of calendar months ("1mo").
type BudgetDuration struct {
	Fixed  time.Duration
	Months int
}

// IsZero reports whether d is the zero duration (no periodic reset).
func (d BudgetDuration) IsZero() bool { return d.Fixed == 0 && d.Months == 0 }

// ParseBudgetDuration parses LiteLLM's budget_duration: a positive integer
// followed by s, m, h, d or mo ("30s", "30m", "1h", "1d", "7d", "30d",
// "1mo"). Whitespace around it is ignored; anything else is an error.
func ParseBudgetDuration(s string) (BudgetDuration, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(s[:i])
	if i == 0 || err != nil || n <= 0 || n > 1_000_000 {
		return BudgetDuration{}, fmt.Errorf("invalid budget_duration %q: want a positive number followed by s, m, h, d or mo", s)
	}
	switch s[i:] {
	case "s":
		return BudgetDuration{Fixed: time.Duration(n) * time.Second}, nil
	case "m":
		return BudgetDuration{Fixed: time.Duration(n) * time.Minute}, nil
	case "h":
		return BudgetDuration{Fixed: time.Duration(n) * time.Hour}, nil
	case "d":
		return BudgetDuration{Fixed: time.Duration(n) * 24 * time.Hour}, nil
	case "mo":
		return BudgetDuration{Months: n}, nil
	}
	return BudgetDuration{}, fmt.Errorf("invalid budget_duration %q: want a positive number followed by s, m, h, d or mo", s)
}

// Add returns t plus the duration (calendar months via time.AddDate, so
// "1mo" from Jan 31 is Mar 3 in a non-leap year, as Go normalises).
func (d BudgetDuration) Add(t time.Time) time.Time {
	if d.Months > 0 {
		return t.AddDate(0, d.Months, 0)
	}
	return t.Add(d.Fixed)
}

// NextReset returns when a budget period that starts at from ends.
func NextReset(from time.Time, duration string) (time.Time, error) {
	d, err := ParseBudgetDuration(duration)
	if err != nil {
		return time.Time{}, err
	}
	return d.Add(from), nil
}

// after returns the first time due + k*d (k >= 1) strictly after now. The
// sequence is anchored on the stored budget_reset_at, so every instance of
// the gateway computes the same next reset.
func (d BudgetDuration) after(due, now time.Time) time.Time {
	if d.Months == 0 {
		if d.Fixed <= 0 {
			return now
		}
		k := now.Sub(due)/d.Fixed + 1
		if k < 1 {
			k = 1
		}
		return due.Add(k * d.Fixed)
	}
	// Multiples from the anchor, not repeated additions, so a period that
	// starts on the 31st does not drift after a short month.
	for k := 1; k < 100_000; k++ {
		if t := due.AddDate(0, k*d.Months, 0); t.After(now) {
			return t
		}
	}
	return d.Add(now)
}
