package spend

import (
	"math"
	"slices"
)

// MaxAlertPercent returns the default max-budget alert point in percent.
func (l *Ledger) MaxAlertPercent() int { return int(l.defPct.Load()) }

// SetMaxAlertPct changes the default max-budget alert point
// (EMAIL_BUDGET_ALERT_MAX_SPEND_ALERT_PERCENTAGE, a fraction in (0, 1],
// rounded to a whole percent) of a live ledger: the ledger outlives
// configurations, and a reload may change the setting. Values outside
// (0, 1] are ignored (the caller validates and reports them).
//
// Every account that uses the default alert (no custom AlertPercents) gets
// its thresholds rebuilt under its lock. Thresholds that exist before and
// after (the soft budget, custom percents) keep their fired state, so they
// do not fire again; the new percent is armed, and fires on the next
// commit if spend is already past it (the alert claim, keyed by percent,
// is a new one).
//
// Call it while provisioning a configuration (loads are not concurrent
// with each other). An Upsert racing with the change builds its thresholds
// with either value; the sweep below rebuilds every account after the
// write, so only an account created in that instant can keep the old
// percent.
func (l *Ledger) SetMaxAlertPct(pct float64) {
	if !(pct > 0 && pct <= 1) {
		return
	}
	p := min(max(int(math.Round(pct*100)), 1), 100)
	if int32(p) == l.defPct.Swap(int32(p)) {
		return
	}
	var accts []*account
	for k := range l.shards {
		for i := range l.shards[k] {
			sh := &l.shards[k][i]
			sh.mu.RLock()
			for _, a := range sh.m {
				accts = append(accts, a)
			}
			sh.mu.RUnlock()
		}
	}
	for _, a := range accts {
		a.mu.Lock()
		if len(a.alertPcts) == 0 && a.hasMax {
			a.rebuildKeepFired(p)
		}
		a.mu.Unlock()
	}
}

// rebuildKeepFired rebuilds the thresholds for defPct, carrying the fired
// bits of thresholds that are still there. Caller holds a.mu.
func (a *account) rebuildKeepFired(defPct int) {
	type ident struct {
		alertType string
		pct       int
	}
	var fired []ident
	for i, t := range a.thr {
		if a.fired&(1<<i) != 0 {
			fired = append(fired, ident{t.alertType, t.pct})
		}
	}
	a.buildThresholds(defPct)
	for i, t := range a.thr {
		if slices.Contains(fired, ident{t.alertType, t.pct}) {
			a.fired |= 1 << i
		}
	}
	a.updateNext()
}
