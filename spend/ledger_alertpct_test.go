package spend

import (
	"testing"

	"github.com/llmspend/llmspend/store"
)

func TestSetMaxAlertPct(t *testing.T) {
	sink := &RecordingSink{}
	l := newTestLedger(t, LedgerConfig{Sink: sink})
	l.Upsert(Account{Kind: store.KindKey, ID: "k", MaxBudget: pico("10"), SoftBudget: pico("1")})
	l.Upsert(Account{Kind: store.KindKey, ID: "custom", MaxBudget: pico("10"), AlertPercents: []int{90}})
	charge := func(id, usd string) {
		r, berr := l.Reserve(id, "", 0)
		if berr != nil {
			t.Fatal(berr)
		}
		l.Commit(r, *pico(usd), "m", 0, 0)
	}
	charge("k", "6") // soft fires; 80% not reached
	charge("custom", "6")
	if sink.Count(store.KindKey, "k", AlertSoftBudget, 0) != 1 || len(sink.Crossings()) != 1 {
		t.Fatalf("before: %+v", sink.Crossings())
	}

	l.SetMaxAlertPct(0.5)
	if l.MaxAlertPercent() != 50 {
		t.Fatalf("percent %d", l.MaxAlertPercent())
	}
	// Spend is already past the new 50% point: the next commit fires it,
	// and the soft alert does not fire again. Custom percents are untouched.
	charge("k", "0.01")
	charge("custom", "0.01")
	if sink.Count(store.KindKey, "k", AlertMaxBudget, 50) != 1 || sink.Count(store.KindKey, "k", AlertSoftBudget, 0) != 1 || len(sink.Crossings()) != 2 {
		t.Fatalf("after: %+v", sink.Crossings())
	}
	// Out-of-range values and the same value change nothing.
	l.SetMaxAlertPct(0)
	l.SetMaxAlertPct(1.5)
	l.SetMaxAlertPct(0.5)
	if l.MaxAlertPercent() != 50 {
		t.Fatalf("percent %d", l.MaxAlertPercent())
	}
	// New accounts use the new percent.
	l.Upsert(Account{Kind: store.KindKey, ID: "new", MaxBudget: pico("10")})
	charge("new", "5")
	if sink.Count(store.KindKey, "new", AlertMaxBudget, 50) != 1 {
		t.Fatalf("new account: %+v", sink.Crossings())
	}
}
