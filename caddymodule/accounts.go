package caddymodule

import (
	"context"
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

// alertPercents reads the thresholds of metadata.max_budget_alert_emails
// ({"50": [...], "75": [...], "100": [...]}); nil when there are none.
func alertPercents(meta map[string]any) []int {
	raw, ok := meta["max_budget_alert_emails"].(map[string]any)
	if !ok || len(raw) == 0 {
		return nil
	}
	out := make([]int, 0, len(raw))
	for k := range raw {
		if n, err := strconv.Atoi(k); err == nil && n >= 1 && n <= 100 {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

func accountOfKey(k *store.Key) spend.Account {
	return spend.Account{
		Kind: store.KindKey, ID: k.ID, Spend: k.Spend, MaxBudget: k.MaxBudget, SoftBudget: k.SoftBudget,
		BudgetDuration: k.BudgetDuration, ResetAt: k.BudgetResetAt, AlertPercents: alertPercents(k.Metadata),
	}
}

func accountOfUser(u *store.User) spend.Account {
	return spend.Account{
		Kind: store.KindUser, ID: u.UserID, Spend: u.Spend, MaxBudget: u.MaxBudget, SoftBudget: u.SoftBudget,
		BudgetDuration: u.BudgetDuration, ResetAt: u.BudgetResetAt, AlertPercents: alertPercents(u.Metadata),
	}
}

// loadAccounts seeds the ledger with every key and user in the store.
func loadAccounts(ctx context.Context, st store.Store, l *spend.Ledger) error {
	keys, err := st.ListKeys(ctx, "")
	if err != nil {
		return err
	}
	for i := range keys {
		l.Upsert(accountOfKey(&keys[i]))
	}
	users, err := st.ListUsers(ctx)
	if err != nil {
		return err
	}
	for i := range users {
		l.Upsert(accountOfUser(&users[i]))
	}
	return nil
}

// sinkSwitch is the ledger's crossing sink. The ledger outlives configs;
// the alerting a config sets up (or none) is swapped in on each load.
type sinkSwitch struct {
	cur atomic.Pointer[spend.CrossingSink]
}

func (s *sinkSwitch) Crossing(c spend.Crossing) {
	gatewayAlertMetrics().Crossed(c.AlertType)
	if p := s.cur.Load(); p != nil {
		(*p).Crossing(c)
	}
}

func (s *sinkSwitch) set(cs spend.CrossingSink) {
	if cs == nil {
		s.cur.Store(nil)
		return
	}
	s.cur.Store(&cs)
}
