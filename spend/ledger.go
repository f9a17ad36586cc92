package spend

import (
	"context"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// Writer is where the ledger writes behind (store.Spend satisfies it).
// ApplySpend must apply a batch atomically (one transaction): on error the
// ledger assumes nothing was applied and sends the same amounts again.
type Writer interface {
	ApplySpend(ctx context.Context, b store.SpendBatch) error
}

// LedgerConfig configures a Ledger. Only Writer is needed in production.
type LedgerConfig struct {
	// Writer receives the write-behind batches; nil keeps spend in memory only.
	Writer Writer
	// Sink receives budget crossings; nil drops them.
	Sink CrossingSink
	// FlushInterval is how often the batch is written (default 1s).
	FlushInterval time.Duration
	// MaxAlertPct is EMAIL_BUDGET_ALERT_MAX_SPEND_ALERT_PERCENTAGE, the
	// default max-budget alert point as a fraction (default 0.8). It is
	// rounded to a whole percent, the unit of alert claims.
	MaxAlertPct float64
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Logger receives flush failures (default: no logging).
	Logger *zap.Logger

	// Shared, when set, makes budgets cluster-wide: every instance's spend
	// is added up in shared counters (Redis; see shared.go). nil: this
	// ledger sees only its own spend and the store's value at load.
	Shared SharedCounters
	// Durable reads every account from the store for reconciliation of
	// the shared counters; nil reconciles from memory only.
	Durable DurableReader
	// SharedInterval is how often deltas are sent to Shared (default 20ms).
	SharedInterval time.Duration
	// SharedRefresh is how often every held account's shared total is
	// re-read (default 1s): accounts this instance does not charge still
	// see the others' spend.
	SharedRefresh time.Duration
	// SharedReconcile is how often the counters are raised to the durable
	// spend (default 1 minute).
	SharedReconcile time.Duration
}

// Account is the budget configuration and stored spend of a key or user,
// as loaded from the store.
type Account struct {
	Kind           string // store.KindKey or store.KindUser
	ID             string // key ID (stable across regenerations) or user ID
	Spend          money.Pico
	MaxBudget      *money.Pico
	SoftBudget     *money.Pico
	BudgetDuration string
	ResetAt        *time.Time // budget_reset_at as stored
	// AlertPercents are custom max-budget alert thresholds (percent, 1..100)
	// from metadata.max_budget_alert_emails; they replace the default alert.
	// nil (or no valid entry) means the default MaxAlertPct alert.
	AlertPercents []int
}

// BudgetError is a request refused by Reserve.
type BudgetError struct {
	Kind      string // store.KindKey or store.KindUser: whose budget
	ID        string
	Spend     money.Pico // spend at the time of the check
	MaxBudget money.Pico
	// Reserved is the estimate of requests in flight on that account.
	Reserved money.Pico
	// Exhausted is true when spend >= max_budget; false when the budget is
	// not spent yet but requests in flight already reserve the rest.
	Exhausted bool
}

func (e *BudgetError) Error() string {
	return "Budget has been exceeded! Current cost: " + e.Spend.String() + ", Max budget: " + e.MaxBudget.String()
}

// Reservation is an admitted request's hold on its key's and user's
// budgets. Finish it with exactly one Commit or Release.
type Reservation struct {
	key, user *account
	estimate  money.Pico
}

// Snapshot is an account's live state, for /key/info and /user/info.
type Snapshot struct {
	Spend          money.Pico
	Reserved       money.Pico // estimates of requests in flight
	InFlight       int
	MaxBudget      *money.Pico
	SoftBudget     *money.Pico
	BudgetDuration string
	ResetAt        *time.Time // when spend next goes back to 0 (nil: never)
}

const (
	kindKey = iota
	kindUser
	shardCount    = 64
	maxThresholds = 64 // fired is a uint64 bitmask
)

type shard struct {
	mu sync.RWMutex
	m  map[string]*account
	_  [32]byte // keep shards on separate cache lines
}

type threshold struct {
	amount    money.Pico
	alertType string
	pct       int
}

type dayKey struct {
	model string
	day   int32 // days since the Unix epoch, UTC
}

type dailyAgg struct {
	spend         money.Pico
	inTok, outTok int64
	requests      int64
}

// account is the in-memory state of one key or user. Everything is
// guarded by mu except due, which the flusher scans without locking.
type account struct {
	mu       sync.Mutex
	kind     string
	id       string
	isKey    bool
	seeded   bool // Upsert has loaded it from the store
	spend    money.Pico
	reserved money.Pico
	inflight int32

	hasMax, hasSoft bool
	max, soft       money.Pico
	alertPcts       []int // valid custom percents, sorted; nil: default
	durStr          string
	dur             BudgetDuration
	window          *time.Time   // budget_reset_at as the store has it; never mutated
	due             atomic.Int64 // unix nanos of the next reset; 0: none

	thr   []threshold // ascending amount
	fired uint64      // bit i: thr[i] fired in this window
	next  money.Pico  // smallest unfired amount: the only compare on the hot path

	// Write-behind state.
	dirty   bool // queued on the ledger's dirty list
	pend    money.Pico
	older   []store.SpendDelta // deltas of windows since reset
	resets  []store.SpendReset
	unacked int // resets sent in batches not yet acknowledged
	daily   map[dayKey]*dailyAgg

	// Shared-counter state (LedgerConfig.Shared), for window cwin.
	cwin      int64      // unix seconds of window (0: none)
	hasShared bool       // shared was read from the counters
	shared    money.Pico // last cluster-wide total seen (ours included)
	unsent    money.Pico // charged, not yet in a batch
	sending   money.Pico // in the batch being sent or held for retry
	gaveUp    money.Pico // in batches given up while the counters were down
	rdirty    bool       // queued on the ledger's shared-dirty list
}

// eff is the spend budgets are checked against: with shared counters the
// cluster-wide total plus what this instance has not sent yet, but never
// less than what this instance knows by itself (store value at load plus
// its own charges), which covers counters that lost data. Caller holds mu.
func (a *account) eff() money.Pico {
	if !a.hasShared {
		return a.spend
	}
	v := addSat(addSat(addSat(a.shared, a.gaveUp), a.sending), a.unsent)
	return max(v, a.spend)
}

// notShared is what the store write-behind must not take yet: amounts not
// acknowledged by the shared counters. Writing them to the store first
// would let another instance's reconcile count them from the store and
// this instance count them again with its next batch. Caller holds mu.
func (a *account) notShared() money.Pico { return a.unsent + a.sending }

// rekey resets the shared-counter state when the account's window moved
// (a reset): the new window's counter starts from zero. Caller holds mu.
func (a *account) rekey() {
	w := windowSeconds(a.window)
	if w == a.cwin {
		return
	}
	a.cwin = w
	a.hasShared, a.shared, a.unsent, a.sending, a.gaveUp = false, 0, 0, 0, 0
}

// Ledger holds live spend and budgets for every loaded key and user. It is
// the authority for spend of the accounts it holds: the store value only
// seeds an account the first time it is loaded, and later the ledger's
// deltas bring the store up to date. All methods are safe for concurrent
// use.
type Ledger struct {
	cfg LedgerConfig
	now func() time.Time
	log *zap.Logger
	// defPct is the default max alert percent; a reload may change it
	// (SetMaxAlertPct) while admin calls Upsert accounts.
	defPct atomic.Int32

	shards [2][shardCount]shard

	dirtyMu sync.Mutex
	dirty   []*account

	flushMu sync.Mutex // one flush at a time
	retry   *pendingBatch

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	sh *sharedSync // nil without LedgerConfig.Shared
}

type pendingBatch struct {
	b    store.SpendBatch
	acks map[*account]int
}

// NewLedger starts a ledger and its write-behind goroutine; stop it with Close.
func NewLedger(cfg LedgerConfig) *Ledger {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxAlertPct <= 0 || cfg.MaxAlertPct > 1 {
		cfg.MaxAlertPct = 0.8
	}
	l := &Ledger{
		cfg:  cfg,
		now:  cfg.Now,
		log:  cfg.Logger,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	l.defPct.Store(int32(min(max(int(math.Round(cfg.MaxAlertPct*100)), 1), 100)))
	for k := range l.shards {
		for i := range l.shards[k] {
			l.shards[k][i].m = make(map[string]*account)
		}
	}
	if cfg.Shared != nil {
		l.sh = newSharedSync(l)
		go l.sh.loop()
	}
	go l.loop()
	return l
}

func kindIndex(kind string) (int, bool) {
	switch kind {
	case store.KindKey:
		return kindKey, true
	case store.KindUser:
		return kindUser, true
	}
	return 0, false
}

// shardOf hashes the id with FNV-1a (ids are random, so a cheap hash of a
// few bytes spreads them; the map hashes again inside the shard).
func (l *Ledger) shardOf(k int, id string) *shard {
	h := uint32(2166136261)
	for i := max(0, len(id)-16); i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &l.shards[k][h%shardCount]
}

func (l *Ledger) lookup(k int, id string) *account {
	sh := l.shardOf(k, id)
	sh.mu.RLock()
	a := sh.m[id]
	sh.mu.RUnlock()
	return a
}

// getOrCreate returns the account, creating an unbudgeted, unseeded one
// when the id was never upserted (its spend still counts and is written).
func (l *Ledger) getOrCreate(k int, id string) *account {
	if a := l.lookup(k, id); a != nil {
		return a
	}
	sh := l.shardOf(k, id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if a := sh.m[id]; a != nil {
		return a
	}
	kind := store.KindKey
	if k == kindUser {
		kind = store.KindUser
	}
	a := &account{kind: kind, id: id, isKey: k == kindKey, next: math.MaxInt64}
	sh.m[id] = a
	return a
}

// Upsert loads or refreshes an account's budget configuration.
//
// Spend: for an account the ledger does not hold yet, a.Spend seeds it
// (plus whatever was charged to it before this first load and not yet
// written). For an account it holds, a.Spend is ignored: memory has every
// charge, including those not flushed yet, so it is the more faithful
// number.
//
// Window: a.ResetAt is adopted when memory has none or a.ResetAt is later
// (a reset recorded elsewhere); an earlier one is a stale read of a reset
// the ledger made itself and is ignored.
//
// Alerts re-arm when max_budget, soft_budget or the alert percents change.
// Unknown kinds are ignored.
func (l *Ledger) Upsert(in Account) {
	k, ok := kindIndex(in.Kind)
	if !ok || in.ID == "" {
		return
	}
	var dur BudgetDuration
	if in.BudgetDuration != "" {
		d, err := ParseBudgetDuration(in.BudgetDuration)
		if err != nil {
			l.log.Warn("ignoring invalid budget_duration", zap.String("kind", in.Kind), zap.String("id", in.ID), zap.Error(err))
		} else {
			dur = d
		}
	}
	pcts := validPercents(in.AlertPercents)
	now := l.now()
	a := l.getOrCreate(k, in.ID)
	a.mu.Lock()
	first := !a.seeded
	if first {
		a.spend = addSat(max(in.Spend, 0), a.pend)
		a.seeded = true
	}
	if in.ResetAt != nil && (a.window == nil || in.ResetAt.After(*a.window)) {
		w := *in.ResetAt
		a.window = &w
	}
	a.rekey()
	if first && l.sh != nil && windowSeconds(in.ResetAt) == a.cwin {
		// The stored spend is a floor of the cluster total: raise the
		// counter to it (a no-op unless Redis lost it or nobody seeded it).
		l.sh.seed(a, max(in.Spend, 0), a.cwin)
	}
	a.durStr = in.BudgetDuration
	a.dur = dur
	switch {
	case dur.IsZero():
		a.due.Store(0)
	case a.window != nil:
		a.due.Store(a.window.UnixNano())
	case a.due.Load() == 0:
		// budget_duration without budget_reset_at: the first period starts
		// now; deltas stay tagged with the stored nil window until the first
		// reset moves it (SpendReset{From: nil}).
		a.due.Store(dur.Add(now).UnixNano())
	}
	hasMax, hasSoft := in.MaxBudget != nil, in.SoftBudget != nil
	var mx, sf money.Pico
	if hasMax {
		mx = *in.MaxBudget
	}
	if hasSoft {
		sf = *in.SoftBudget
	}
	if hasMax != a.hasMax || mx != a.max || hasSoft != a.hasSoft || sf != a.soft || !slices.Equal(pcts, a.alertPcts) {
		a.hasMax, a.max, a.hasSoft, a.soft, a.alertPcts = hasMax, mx, hasSoft, sf, pcts
		a.buildThresholds(int(l.defPct.Load()))
	}
	a.maybeReset(l, now)
	a.mu.Unlock()
}

func validPercents(in []int) []int {
	var out []int
	for _, p := range in {
		if p >= 1 && p <= 100 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	if len(out) > maxThresholds-1 {
		out = out[:maxThresholds-1]
	}
	return out
}

// buildThresholds precomputes alert amounts and re-arms every alert.
func (a *account) buildThresholds(defPct int) {
	a.thr = a.thr[:0]
	if a.hasSoft && a.soft > 0 {
		a.thr = append(a.thr, threshold{amount: a.soft, alertType: AlertSoftBudget})
	}
	if a.hasMax && a.max > 0 {
		pcts := a.alertPcts
		if len(pcts) == 0 {
			pcts = []int{defPct}
		}
		for _, p := range pcts {
			a.thr = append(a.thr, threshold{amount: percentOf(a.max, p), alertType: AlertMaxBudget, pct: p})
		}
	}
	slices.SortStableFunc(a.thr, func(x, y threshold) int {
		switch {
		case x.amount < y.amount:
			return -1
		case x.amount > y.amount:
			return 1
		}
		return 0
	})
	a.fired = 0
	a.updateNext()
}

// percentOf returns ceil(v * p / 100) without overflow: spend reaches p%
// of v exactly when spend*100 >= v*p.
func percentOf(v money.Pico, p int) money.Pico {
	hi, lo := bits.Mul64(uint64(v), uint64(p))
	q, r := bits.Div64(hi, lo, 100) // hi < 100 since v < 2^63, p <= 100
	if r != 0 {
		q++
	}
	return money.Pico(q)
}

func (a *account) updateNext() {
	a.next = math.MaxInt64
	for i, t := range a.thr {
		if a.fired&(1<<i) == 0 {
			a.next = t.amount
			return
		}
	}
}

// Remove forgets an account (deleted key or user). Charges not yet written
// are still flushed.
func (l *Ledger) Remove(kind, id string) {
	k, ok := kindIndex(kind)
	if !ok {
		return
	}
	sh := l.shardOf(k, id)
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
}

// Reserve admits a request against its key's and user's (userID may be "")
// max budgets and holds estimate (see EstimateCost) on both until Commit
// or Release.
//
// It refuses when spend >= max_budget (the SPEC's budget_exceeded), and
// also when other requests are in flight and spend + their estimates +
// this estimate would pass max_budget. The overshoot bound is therefore:
// requests admitted while others are in flight fit in the budget by their
// estimates, and at most one request is admitted beyond the budget, the
// one that finds nothing in flight (a request is never refused for its own
// size alone, or a key with little left could not serve anything). With
// upper-bound estimates, final spend <= max_budget + the cost of one
// request; 200 concurrent requests on a nearly spent key cannot all pass.
func (l *Ledger) Reserve(keyID, userID string, estimate money.Pico) (Reservation, *BudgetError) {
	estimate = max(estimate, 0)
	now := l.now()
	r := Reservation{key: l.getOrCreate(kindKey, keyID), estimate: estimate}
	if userID != "" {
		r.user = l.getOrCreate(kindUser, userID)
	}
	// Lock order: key, then user (a key is never a user: no cycles).
	r.key.mu.Lock()
	if r.user != nil {
		r.user.mu.Lock()
	}
	r.key.maybeReset(l, now)
	berr := r.key.admit(estimate)
	if berr == nil && r.user != nil {
		r.user.maybeReset(l, now)
		berr = r.user.admit(estimate)
	}
	if berr == nil {
		r.key.hold(estimate)
		if r.user != nil {
			r.user.hold(estimate)
		}
	}
	if r.user != nil {
		r.user.mu.Unlock()
	}
	r.key.mu.Unlock()
	if berr != nil {
		return Reservation{}, berr
	}
	return r, nil
}

func (a *account) admit(estimate money.Pico) *BudgetError {
	if !a.hasMax {
		return nil
	}
	spend := a.eff()
	if spend >= a.max {
		return &BudgetError{Kind: a.kind, ID: a.id, Spend: spend, MaxBudget: a.max, Reserved: a.reserved, Exhausted: true}
	}
	if a.inflight > 0 && addSat(addSat(spend, a.reserved), estimate) > a.max {
		return &BudgetError{Kind: a.kind, ID: a.id, Spend: spend, MaxBudget: a.max, Reserved: a.reserved}
	}
	return nil
}

func (a *account) hold(estimate money.Pico) {
	a.reserved = addSat(a.reserved, estimate)
	a.inflight++
}

func (a *account) unhold(estimate money.Pico) {
	a.reserved = max(a.reserved-estimate, 0)
	if a.inflight > 0 {
		a.inflight--
	}
	if a.inflight == 0 {
		a.reserved = 0
	}
}

// Release ends a reservation without charge (upstream error, not billed).
func (l *Ledger) Release(r Reservation) {
	if r.key == nil {
		return
	}
	r.key.mu.Lock()
	r.key.unhold(r.estimate)
	r.key.mu.Unlock()
	if r.user != nil {
		r.user.mu.Lock()
		r.user.unhold(r.estimate)
		r.user.mu.Unlock()
	}
}

// Commit ends a reservation with its actual cost: the estimate is
// released and cost is added to the key's and the user's spend under both
// locks (never one without the other), to the key's daily aggregate for
// model, and to the next write-behind batch. Alert thresholds reached are
// sent to the sink after the locks are released.
//
// Crossing rule: a threshold fires on the first commit in a budget window
// that brings spend to >= its amount (soft_budget; ceil(max x pct) for the
// max alerts), once per window; a reset or a changed budget re-arms it.
// Starting below the threshold this is exactly old < amount <= new. All
// thresholds reached by one commit fire, in ascending order. The default
// max alert also fires when the same commit reaches or passes max_budget
// (LiteLLM's "while below max_budget" check would stay silent there; one
// alert is better than a key blocked without warning). A custom 100%
// threshold fires on the commit that exhausts the budget.
func (l *Ledger) Commit(r Reservation, cost money.Pico, model string, inTok, outTok int64) {
	if r.key == nil {
		return
	}
	cost = max(cost, 0)
	now := l.now()
	day := int32(now.Unix() / 86400)
	var kc, uc []Crossing
	k, u := r.key, r.user
	k.mu.Lock()
	if u != nil {
		u.mu.Lock()
	}
	k.maybeReset(l, now)
	k.unhold(r.estimate)
	kc = k.charge(l, cost)
	if k.daily == nil {
		k.daily = make(map[dayKey]*dailyAgg)
	}
	d := k.daily[dayKey{model, day}]
	if d == nil {
		d = &dailyAgg{}
		k.daily[dayKey{model, day}] = d
	}
	d.spend = addSat(d.spend, cost)
	d.inTok += max(inTok, 0)
	d.outTok += max(outTok, 0)
	d.requests++
	if u != nil {
		u.maybeReset(l, now)
		u.unhold(r.estimate)
		uc = u.charge(l, cost)
		u.mu.Unlock()
	}
	k.mu.Unlock()
	if l.cfg.Sink != nil {
		for _, c := range kc {
			l.cfg.Sink.Crossing(c)
		}
		for _, c := range uc {
			l.cfg.Sink.Crossing(c)
		}
	}
}

// charge adds cost to spend and returns the crossings it causes (nil, with
// no allocation, in the common case). Caller holds a.mu.
func (a *account) charge(l *Ledger, cost money.Pico) []Crossing {
	old := a.eff()
	a.spend = addSat(a.spend, cost)
	a.pend = addSat(a.pend, cost)
	l.markDirty(a)
	cur := a.eff()
	if l.sh != nil && cost != 0 {
		a.unsent = addSat(a.unsent, cost)
		l.sh.markDirty(a)
		cur = a.eff()
		if a.hasMax && cur >= a.max/2 {
			// Past half the budget: send now rather than at the next
			// tick, so the other instances see it (and this one sees
			// theirs) one round trip late instead of one interval late.
			l.sh.kickNow()
		}
	}
	if cur < a.next {
		return nil
	}
	return a.fire(old, cur)
}

// fire marks every unfired threshold at or below cur (the spend now) as
// fired and returns their crossings.
func (a *account) fire(old, cur money.Pico) []Crossing {
	var cs []Crossing
	for i, t := range a.thr {
		if t.amount > cur {
			break
		}
		if a.fired&(1<<i) != 0 {
			continue
		}
		a.fired |= 1 << i
		c := Crossing{Kind: a.kind, ID: a.id, AlertType: t.alertType, Threshold: t.pct,
			ThresholdAmount: t.amount, OldSpend: old, NewSpend: cur, ResetAt: a.resetAt()}
		if a.hasMax {
			m := a.max
			c.MaxBudget = &m
		}
		if a.hasSoft {
			s := a.soft
			c.SoftBudget = &s
		}
		cs = append(cs, c)
	}
	a.updateNext()
	return cs
}

// resetAt is the end of the current window: the stored budget_reset_at,
// or the computed first reset when the store has none yet.
func (a *account) resetAt() *time.Time {
	if a.window != nil {
		return a.window
	}
	if d := a.due.Load(); d != 0 {
		t := time.Unix(0, d).UTC()
		return &t
	}
	return nil
}

// maybeReset applies a due budget reset: spend goes to 0, alerts re-arm,
// and a SpendReset from the stored window to the next one is queued.
// Caller holds a.mu. The common path is one atomic load and a compare.
func (a *account) maybeReset(l *Ledger, now time.Time) {
	d := a.due.Load()
	if d == 0 || now.UnixNano() < d {
		return
	}
	next := a.dur.after(time.Unix(0, d).UTC(), now)
	if a.pend != 0 {
		a.older = append(a.older, store.SpendDelta{Kind: a.kind, ID: a.id, Window: a.window, Amount: a.pend})
		a.pend = 0
	}
	a.resets = append(a.resets, store.SpendReset{Kind: a.kind, ID: a.id, From: a.window, To: next})
	a.window = &next
	a.due.Store(next.UnixNano())
	a.rekey()
	a.spend = 0
	a.fired = 0
	a.updateNext()
	l.markDirty(a)
}

// markDirty queues a for the next flush. Caller holds a.mu.
func (l *Ledger) markDirty(a *account) {
	if a.dirty {
		return
	}
	a.dirty = true
	l.dirtyMu.Lock()
	l.dirty = append(l.dirty, a)
	l.dirtyMu.Unlock()
}

// Spend returns the live spend of an account (0 when unknown).
func (l *Ledger) Spend(kind, id string) money.Pico {
	s, _ := l.Snapshot(kind, id)
	return s.Spend
}

// Snapshot returns the live state of an account, applying a due reset
// first so a reader never sees last period's spend.
func (l *Ledger) Snapshot(kind, id string) (Snapshot, bool) {
	k, ok := kindIndex(kind)
	if !ok {
		return Snapshot{}, false
	}
	a := l.lookup(k, id)
	if a == nil {
		return Snapshot{}, false
	}
	now := l.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.maybeReset(l, now)
	s := Snapshot{Spend: a.eff(), Reserved: a.reserved, InFlight: int(a.inflight), BudgetDuration: a.durStr}
	if a.hasMax {
		m := a.max
		s.MaxBudget = &m
	}
	if a.hasSoft {
		v := a.soft
		s.SoftBudget = &v
	}
	if !a.dur.IsZero() {
		s.ResetAt = a.resetAt()
	}
	return s, true
}

func (l *Ledger) loop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(30*time.Second, 5*l.cfg.FlushInterval))
			if err := l.Flush(ctx); err != nil {
				l.log.Warn("spend write-behind failed; will retry", zap.Error(err))
			}
			cancel()
		}
	}
}

// Close stops the write-behind goroutine and flushes what is left (after
// a last batch to the shared counters). The ledger must not be used
// afterwards.
func (l *Ledger) Close(ctx context.Context) error {
	l.closeOnce.Do(func() { close(l.stop) })
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.sh != nil {
		select {
		case <-l.sh.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.Flush(ctx)
}

// Flush writes every pending charge, reset and daily aggregate now (for
// shutdown and reload). A failed batch is kept and merged into the next
// one: nothing is lost, and since a batch is applied atomically nothing is
// counted twice. It also applies resets that fell due on idle accounts.
func (l *Ledger) Flush(ctx context.Context) error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	// Charges made in a window whose reset is still unacknowledged wait one
	// round (see flushOnce), so a few rounds empty everything.
	for range 3 {
		more, err := l.flushOnce(ctx)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// flushOnce builds and applies one batch. It reports whether charges were
// held back for a next round.
//
// Ordering: a store may apply a batch's deltas and resets in any order,
// and a delta tagged with a window the store has not reached yet would be
// dropped. So a charge of the new window is held back until the batch
// carrying the reset that opens the window has been acknowledged.
func (l *Ledger) flushOnce(ctx context.Context) (bool, error) {
	now := l.now()
	l.sweepResets(now)

	l.dirtyMu.Lock()
	list := l.dirty
	l.dirty = nil
	l.dirtyMu.Unlock()

	pb := l.retry
	l.retry = nil
	if pb == nil {
		pb = &pendingBatch{acks: make(map[*account]int)}
	}
	today := int32(now.Unix() / 86400)
	var held, kept []*account
	for _, a := range list {
		a.mu.Lock()
		a.maybeReset(l, now)
		pb.b.Deltas = append(pb.b.Deltas, a.older...)
		clear(a.older)
		a.older = a.older[:0]
		if len(a.resets) > 0 {
			pb.b.Resets = append(pb.b.Resets, a.resets...)
			pb.acks[a] += len(a.resets)
			a.unacked += len(a.resets)
			clear(a.resets)
			a.resets = a.resets[:0]
		}
		isHeld := false
		if a.pend != 0 {
			if a.unacked == 0 {
				// Amounts the shared counters have not acknowledged wait
				// for the next flush (see account.notShared).
				amt := a.pend - min(a.notShared(), a.pend)
				if amt != 0 {
					pb.b.Deltas = append(pb.b.Deltas, store.SpendDelta{Kind: a.kind, ID: a.id, Window: a.window, Amount: amt})
					a.pend -= amt
				}
				if a.pend != 0 {
					isHeld = true
					kept = append(kept, a)
				}
			} else {
				isHeld = true
				held = append(held, a)
			}
		}
		for dk, d := range a.daily {
			if d.requests != 0 || d.spend != 0 {
				pb.b.Daily = append(pb.b.Daily, store.DailySpend{KeyID: a.id, Model: dk.model, Day: dayString(dk.day),
					Spend: d.spend, InputTokens: d.inTok, OutputTokens: d.outTok, Requests: d.requests})
				*d = dailyAgg{}
			} else if dk.day != today {
				delete(a.daily, dk)
			}
		}
		a.dirty = isHeld // held accounts go back on the list below
		a.mu.Unlock()
	}
	if len(held)+len(kept) > 0 {
		l.dirtyMu.Lock()
		l.dirty = append(l.dirty, held...)
		l.dirty = append(l.dirty, kept...)
		l.dirtyMu.Unlock()
	}
	compact(&pb.b)
	if len(pb.b.Deltas) == 0 && len(pb.b.Resets) == 0 && len(pb.b.Daily) == 0 {
		return false, nil
	}
	if l.cfg.Writer == nil {
		l.ack(pb)
		return len(held) > 0, nil
	}
	if err := l.cfg.Writer.ApplySpend(ctx, pb.b); err != nil {
		l.retry = pb
		return false, err
	}
	l.ack(pb)
	return len(held) > 0, nil
}

func (l *Ledger) ack(pb *pendingBatch) {
	for a, n := range pb.acks {
		a.mu.Lock()
		a.unacked -= n
		a.mu.Unlock()
	}
}

// sweepResets applies due resets on accounts nobody is using, so the store
// and /key/info see them on time.
func (l *Ledger) sweepResets(now time.Time) {
	ns := now.UnixNano()
	var due []*account
	for k := range l.shards {
		for i := range l.shards[k] {
			sh := &l.shards[k][i]
			sh.mu.RLock()
			for _, a := range sh.m {
				if d := a.due.Load(); d != 0 && d <= ns {
					due = append(due, a)
				}
			}
			sh.mu.RUnlock()
		}
	}
	for _, a := range due {
		a.mu.Lock()
		a.maybeReset(l, now)
		a.mu.Unlock()
	}
}

// compact merges deltas of the same account and window and daily rows of
// the same key, model and day (a retried batch plus new charges).
func compact(b *store.SpendBatch) {
	type dk struct {
		kind, id string
		win      int64
		hasWin   bool
	}
	if len(b.Deltas) > 1 {
		idx := make(map[dk]int, len(b.Deltas))
		out := b.Deltas[:0]
		for _, d := range b.Deltas {
			k := dk{kind: d.Kind, id: d.ID}
			if d.Window != nil {
				k.win, k.hasWin = d.Window.UnixNano(), true
			}
			if i, ok := idx[k]; ok {
				out[i].Amount = addSat(out[i].Amount, d.Amount)
				continue
			}
			idx[k] = len(out)
			out = append(out, d)
		}
		b.Deltas = out
	}
	if len(b.Daily) > 1 {
		type yk struct{ key, model, day string }
		idx := make(map[yk]int, len(b.Daily))
		out := b.Daily[:0]
		for _, d := range b.Daily {
			k := yk{d.KeyID, d.Model, d.Day}
			if i, ok := idx[k]; ok {
				o := &out[i]
				o.Spend = addSat(o.Spend, d.Spend)
				o.InputTokens += d.InputTokens
				o.OutputTokens += d.OutputTokens
				o.Requests += d.Requests
				continue
			}
			idx[k] = len(out)
			out = append(out, d)
		}
		b.Daily = out
	}
}

func dayString(day int32) string {
	return time.Unix(int64(day)*86400, 0).UTC().Format(time.DateOnly)
}
