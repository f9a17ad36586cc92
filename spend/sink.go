package spend

import (
	"sync"
	"time"

	"github.com/llmspend/llmspend/money"
)

// Alert types of a Crossing, as in store.AlertClaim.AlertType.
const (
	AlertSoftBudget = "soft_budget"
	AlertMaxBudget  = "max_budget"
)

// Crossing reports that an account's spend reached an alert threshold.
type Crossing struct {
	Kind      string // store.KindKey or store.KindUser
	ID        string
	AlertType string // AlertSoftBudget or AlertMaxBudget
	// Threshold is the percent of max_budget (80 by default, or one of the
	// account's AlertPercents); 0 for the soft budget.
	Threshold       int
	ThresholdAmount money.Pico
	OldSpend        money.Pico // spend before the commit that fired
	NewSpend        money.Pico // spend after it
	MaxBudget       *money.Pico
	SoftBudget      *money.Pico
	// ResetAt is budget_reset_at of the window the crossing belongs to
	// (nil without budget_duration); with MaxBudget it makes the alert
	// claim's window, so a reset or a new budget re-arms the alert.
	ResetAt *time.Time
}

// CrossingSink receives crossings. The ledger calls it on the request path,
// after releasing its locks, so Crossing must not block: hand the value to
// a queue or goroutine (the alerter claims and mails asynchronously).
type CrossingSink interface {
	Crossing(Crossing)
}

// RecordingSink is a CrossingSink that records every crossing, for tests.
// It is safe for concurrent use.
type RecordingSink struct {
	mu sync.Mutex
	cs []Crossing
}

// Crossing records c.
func (s *RecordingSink) Crossing(c Crossing) {
	s.mu.Lock()
	s.cs = append(s.cs, c)
	s.mu.Unlock()
}

// Crossings returns a copy of what was recorded, in arrival order.
func (s *RecordingSink) Crossings() []Crossing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Crossing(nil), s.cs...)
}

// Count returns how many recorded crossings match kind, id, alert type and
// threshold.
func (s *RecordingSink) Count(kind, id, alertType string, threshold int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.cs {
		if c.Kind == kind && c.ID == id && c.AlertType == alertType && c.Threshold == threshold {
			n++
		}
	}
	return n
}

// Reset forgets everything recorded.
func (s *RecordingSink) Reset() {
	s.mu.Lock()
	s.cs = nil
	s.mu.Unlock()
}
