package spend

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// SharedKey identifies one shared counter: an entity in one budget window.
// Window is budget_reset_at in unix seconds, 0 when the entity has none
// (the same convention as package cluster).
type SharedKey struct {
	Kind   string // store.KindKey or store.KindUser
	ID     string
	Window int64
}

// SharedAddResult is what a batch did to the shared counters.
type SharedAddResult struct {
	// Totals are the cluster-wide totals, after the batch, of the counters
	// it touched.
	Totals map[SharedKey]money.Pico
	// Created lists counters that did not exist before the batch (nobody
	// seeded them, or the shared store lost its data).
	Created []SharedKey
}

// SharedCounters are spend counters shared by every gateway instance
// (Redis in production, through package cluster; the ledger knows nothing
// of Redis). Implementations must be safe for concurrent use. The ledger
// calls them from one background goroutine, never on the request path.
type SharedCounters interface {
	// NewBatchID returns a fresh batch ID for AddRetry.
	NewBatchID() string
	// AddRetry adds deltas in one round trip; repeating a call with the
	// same batch ID and deltas applies them at most once.
	AddRetry(ctx context.Context, batchID string, deltas []store.SpendDelta) (SharedAddResult, error)
	// Get reads counters; missing counters are absent from the result.
	Get(ctx context.Context, keys []SharedKey) (map[SharedKey]money.Pico, error)
	// Raise moves each counter up to its floor (never down) and returns
	// the resulting values.
	Raise(ctx context.Context, floors map[SharedKey]money.Pico) (map[SharedKey]money.Pico, error)
	// Ping checks that the counters answer.
	Ping(ctx context.Context) error
}

// DurableReader returns every key and user as the store has them now
// (Spend and ResetAt are what reconciliation uses).
type DurableReader func(ctx context.Context) ([]Account, error)

func windowSeconds(w *time.Time) int64 {
	if w == nil {
		return 0
	}
	return w.Unix()
}

const (
	defaultSharedInterval  = 20 * time.Millisecond
	defaultSharedRefresh   = time.Second
	defaultSharedReconcile = time.Minute
	// sharedDownAfter is how long a batch is retried (same ID: exact)
	// before the counters are declared down and the ledger falls back to
	// local counters.
	sharedDownAfter = time.Second
	// sharedPing is how often a down Redis is probed.
	sharedPing = 250 * time.Millisecond
	// sharedChunk bounds the counters of one Get or Raise call.
	sharedChunk = 1000
	// minReconcileGap spaces reconciles triggered by lost counters.
	minReconcileGap = 500 * time.Millisecond
	// sharedCallTimeout bounds one call to the counters.
	sharedCallTimeout = 2 * time.Second
)

// sharedSync drives the shared counters for a Ledger, following the
// protocol in package cluster's documentation:
//
//   - Commit adds the cost to the account's unsent amount (no I/O); every
//     SharedInterval one goroutine sends all unsent amounts as one batch
//     (one round trip) and adopts the totals it returns, which include the
//     other instances' spend. Budgets are checked against that total plus
//     what is unsent or being sent (account.eff).
//   - A failed batch is held and re-sent under the same ID, so it counts
//     at most once. If it still fails after sharedDownAfter, the counters
//     are down: the batch is given up (its amounts stay in the local view
//     as gaveUp), budgets are enforced on the last total plus local
//     spend, and the store write-behind goes on. When a ping succeeds
//     again, a reconcile raises every counter to the durable floor.
//   - Accounts are seeded when loaded, re-read every SharedRefresh, and
//     reconciled every SharedReconcile, after counters were created from
//     zero, and when a total comes back lower than before (data lost).
//
// Only the loop goroutine touches the fields below mu-less; the queues
// have their own locks.
type sharedSync struct {
	l   *Ledger
	sc  SharedCounters
	log *zap.Logger

	interval, refresh, reconcile time.Duration

	dirtyMu sync.Mutex
	dirty   []*account

	seedMu sync.Mutex
	seeds  map[*account]seedReq

	// Loop-owned.
	held          *sharedBatch
	failingSince  time.Time
	down          bool
	lastPing      time.Time
	lastRefresh   time.Time
	lastReconcile time.Time
	wantReconcile bool
	followUp      time.Time // a reconcile once the store has caught up; zero: none

	downFlag atomic.Bool // down, for other goroutines
	kick     chan struct{}
	done     chan struct{}
}

type seedReq struct {
	floor money.Pico
	win   int64
}

type batchPart struct {
	a   *account
	win int64
	amt money.Pico
}

type sharedBatch struct {
	id     string
	deltas []store.SpendDelta
	parts  []batchPart
}

func newSharedSync(l *Ledger) *sharedSync {
	c := l.cfg
	s := &sharedSync{
		l: l, sc: c.Shared, log: l.log,
		interval:  c.SharedInterval,
		refresh:   c.SharedRefresh,
		reconcile: c.SharedReconcile,
		seeds:     make(map[*account]seedReq),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = defaultSharedInterval
	}
	if s.refresh <= 0 {
		s.refresh = defaultSharedRefresh
	}
	if s.reconcile <= 0 {
		s.reconcile = defaultSharedReconcile
	}
	now := time.Now()
	s.lastRefresh, s.lastReconcile = now, now
	return s
}

// markDirty queues a for the next batch. Caller holds a.mu.
func (s *sharedSync) markDirty(a *account) {
	if a.rdirty {
		return
	}
	a.rdirty = true
	s.dirtyMu.Lock()
	s.dirty = append(s.dirty, a)
	s.dirtyMu.Unlock()
}

// kickNow asks for a batch now (an account near its budget). It never
// blocks: a kick already pending covers this one.
func (s *sharedSync) kickNow() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// seed queues a raise of a's counter to floor. Caller holds a.mu.
func (s *sharedSync) seed(a *account, floor money.Pico, win int64) {
	s.seedMu.Lock()
	s.seeds[a] = seedReq{floor: floor, win: win}
	s.seedMu.Unlock()
}

func (s *sharedSync) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.l.stop:
			s.final()
			return
		case <-t.C:
			s.tick()
		case <-s.kick:
			s.tick()
		}
	}
}

func (s *sharedSync) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sharedCallTimeout)
}

// tick is one round: retry or send a batch, then seeds, refresh and
// reconcile when due.
func (s *sharedSync) tick() {
	now := time.Now()
	if s.down {
		s.giveUpUnsent()
		if now.Sub(s.lastPing) < sharedPing {
			return
		}
		s.lastPing = now
		ctx, cancel := s.ctx()
		err := s.sc.Ping(ctx)
		cancel()
		if err != nil {
			return
		}
		s.down = false
		s.downFlag.Store(false)
		s.log.Warn("shared spend counters (Redis) are back; reconciling")
		s.reconcileAll()
		s.followUp = now.Add(3*s.l.cfg.FlushInterval + time.Second)
		return
	}
	if s.held != nil {
		ctx, cancel := s.ctx()
		res, err := s.sc.AddRetry(ctx, s.held.id, s.held.deltas)
		cancel()
		if err != nil {
			s.failed(err)
			return
		}
		s.failingSince = time.Time{}
		b := s.held
		s.held = nil
		s.apply(b, res)
	}
	// Seeds first: a batch that created a counter before its seed would
	// leave it short of the stored spend until the next reconcile.
	s.sendSeeds()
	if b := s.collect(); b != nil {
		ctx, cancel := s.ctx()
		res, err := s.sc.AddRetry(ctx, b.id, b.deltas)
		cancel()
		if err != nil {
			s.held = b
			s.failed(err)
			return
		}
		s.failingSince = time.Time{}
		s.apply(b, res)
	}
	if now.Sub(s.lastRefresh) >= s.refresh {
		s.lastRefresh = now
		s.refreshAll()
	}
	// A wanted reconcile waits at least minReconcileGap after the last
	// one: it reads every account from the store.
	switch {
	case s.wantReconcile && now.Sub(s.lastReconcile) >= minReconcileGap:
		// Counters lost data. This reconcile restores what the store and
		// this instance know; the others' amounts that were in Redis but
		// not yet in the store come back with a second one, once every
		// instance has flushed them.
		s.reconcileAll()
		s.followUp = now.Add(3*s.l.cfg.FlushInterval + time.Second)
	case !s.followUp.IsZero() && now.After(s.followUp):
		s.followUp = time.Time{}
		s.reconcileAll()
	case now.Sub(s.lastReconcile) >= s.reconcile:
		s.reconcileAll()
	}
}

// collect moves every account's unsent amount into a new batch.
func (s *sharedSync) collect() *sharedBatch {
	s.dirtyMu.Lock()
	list := s.dirty
	s.dirty = nil
	s.dirtyMu.Unlock()
	if len(list) == 0 {
		return nil
	}
	b := &sharedBatch{}
	for _, a := range list {
		a.mu.Lock()
		a.rdirty = false
		if a.unsent != 0 {
			amt := a.unsent
			a.unsent = 0
			a.sending = addSat(a.sending, amt)
			b.parts = append(b.parts, batchPart{a: a, win: a.cwin, amt: amt})
			b.deltas = append(b.deltas, store.SpendDelta{Kind: a.kind, ID: a.id, Window: a.window, Amount: amt})
		}
		a.mu.Unlock()
	}
	if len(b.parts) == 0 {
		return nil
	}
	b.id = s.sc.NewBatchID()
	return b
}

// apply adopts a batch's totals.
func (s *sharedSync) apply(b *sharedBatch, res SharedAddResult) {
	var cs []Crossing
	for _, p := range b.parts {
		a := p.a
		a.mu.Lock()
		if a.cwin == p.win {
			a.sending = max(a.sending-p.amt, 0)
			if tot, ok := res.Totals[SharedKey{a.kind, a.id, p.win}]; ok {
				if a.hasShared && tot < addSat(a.shared, p.amt) {
					s.wantReconcile = true // the counter went down: data lost
				}
				cs = s.adopt(a, tot, cs)
			}
		}
		a.mu.Unlock()
	}
	if len(res.Created) > 0 {
		// A counter created from zero by this batch holds only this
		// batch: raise it to the durable spend.
		s.wantReconcile = true
	}
	s.send(cs)
}

// adopt takes a cluster-wide total of a's current window and returns the
// crossings it causes (other instances' spend can cross thresholds here).
// A total never lowers shared: within a window counters only grow, so a
// lower one means lost data, which reconcile repairs. Caller holds a.mu.
func (s *sharedSync) adopt(a *account, tot money.Pico, cs []Crossing) []Crossing {
	old := a.eff()
	if !a.hasShared || tot > a.shared {
		a.shared = max(tot, 0)
	}
	a.hasShared = true
	if cur := a.eff(); cur >= a.next {
		cs = append(cs, a.fire(old, cur)...)
	}
	return cs
}

func (s *sharedSync) send(cs []Crossing) {
	if s.l.cfg.Sink == nil {
		return
	}
	for _, c := range cs {
		s.l.cfg.Sink.Crossing(c)
	}
}

// failed records a failed call: after sharedDownAfter of failures (calls
// in between may have failed or not) the counters are declared down. A
// batch that fails is held and re-sent meanwhile; seeds, refreshes and
// reconciles are simply tried again later.
func (s *sharedSync) failed(err error) {
	if s.down {
		return
	}
	now := time.Now()
	if s.failingSince.IsZero() {
		s.failingSince = now
		return
	}
	if now.Sub(s.failingSince) >= sharedDownAfter {
		s.goDown(err)
	}
}

// goDown gives up the held batch and falls back to local counters.
func (s *sharedSync) goDown(err error) {
	s.down = true
	s.failingSince = time.Time{}
	s.downFlag.Store(true)
	s.lastPing = time.Now()
	s.log.Error("shared spend counters (Redis) unavailable: enforcing budgets on local counters until it returns", zap.Error(err))
	if b := s.held; b != nil {
		s.held = nil
		for _, p := range b.parts {
			a := p.a
			a.mu.Lock()
			if a.cwin == p.win {
				a.sending = max(a.sending-p.amt, 0)
				a.gaveUp = addSat(a.gaveUp, p.amt)
			}
			a.mu.Unlock()
		}
	}
	s.giveUpUnsent()
}

// giveUpUnsent moves unsent amounts to gaveUp while the counters are down,
// so they count locally and the store write-behind can take them.
func (s *sharedSync) giveUpUnsent() {
	s.dirtyMu.Lock()
	list := s.dirty
	s.dirty = nil
	s.dirtyMu.Unlock()
	for _, a := range list {
		a.mu.Lock()
		a.rdirty = false
		a.gaveUp = addSat(a.gaveUp, a.unsent)
		a.unsent = 0
		a.mu.Unlock()
	}
}

func (s *sharedSync) sendSeeds() {
	s.seedMu.Lock()
	if len(s.seeds) == 0 {
		s.seedMu.Unlock()
		return
	}
	seeds := s.seeds
	s.seeds = make(map[*account]seedReq)
	s.seedMu.Unlock()
	floors := make(map[SharedKey]money.Pico, len(seeds))
	accts := make(map[SharedKey]*account, len(seeds))
	for a, r := range seeds {
		k := SharedKey{a.kind, a.id, r.win}
		floors[k] = max(floors[k], r.floor)
		accts[k] = a
	}
	if !s.raise(floors, accts, false) {
		// Not sent: the next reconcile covers these accounts.
		s.wantReconcile = true
	}
}

// raise sends floors in chunks and adopts the results; clearGaveUp drops
// the given-up amounts the floors included. It reports success.
func (s *sharedSync) raise(floors map[SharedKey]money.Pico, accts map[SharedKey]*account, clearGaveUp bool) bool {
	chunk := make(map[SharedKey]money.Pico, min(len(floors), sharedChunk))
	flush := func() bool {
		ctx, cancel := s.ctx()
		vals, err := s.sc.Raise(ctx, chunk)
		cancel()
		if err != nil {
			s.failed(err)
			return false
		}
		s.failingSince = time.Time{}
		var cs []Crossing
		for k, v := range vals {
			a := accts[k]
			a.mu.Lock()
			if a.cwin == k.Window {
				if clearGaveUp {
					a.gaveUp = 0
				}
				cs = s.adopt(a, v, cs)
			}
			a.mu.Unlock()
		}
		s.send(cs)
		clear(chunk)
		return true
	}
	for k, f := range floors {
		chunk[k] = f
		if len(chunk) == sharedChunk && !flush() {
			return false
		}
	}
	if len(chunk) > 0 {
		return flush()
	}
	return true
}

// heldAccounts returns every account the ledger holds.
func (l *Ledger) heldAccounts() []*account {
	var out []*account
	for k := range l.shards {
		for i := range l.shards[k] {
			sh := &l.shards[k][i]
			sh.mu.RLock()
			for _, a := range sh.m {
				out = append(out, a)
			}
			sh.mu.RUnlock()
		}
	}
	return out
}

// refreshAll re-reads every held account's counter, so instances see spend
// on accounts they do not charge themselves.
func (s *sharedSync) refreshAll() {
	all := s.l.heldAccounts()
	keys := make([]SharedKey, 0, min(len(all), sharedChunk))
	accts := make(map[SharedKey]*account, min(len(all), sharedChunk))
	flush := func() bool {
		ctx, cancel := s.ctx()
		vals, err := s.sc.Get(ctx, keys)
		cancel()
		if err != nil {
			s.failed(err)
			return false
		}
		s.failingSince = time.Time{}
		var cs []Crossing
		for _, k := range keys {
			a := accts[k]
			v, ok := vals[k]
			a.mu.Lock()
			if a.cwin == k.Window {
				switch {
				case ok && (!a.hasShared || v >= a.shared):
					cs = s.adopt(a, v, cs)
				case a.hasShared && a.shared > 0:
					s.wantReconcile = true // lower or missing: data lost
				}
			}
			a.mu.Unlock()
		}
		s.send(cs)
		keys = keys[:0]
		clear(accts)
		return true
	}
	for _, a := range all {
		a.mu.Lock()
		k := SharedKey{a.kind, a.id, a.cwin}
		a.mu.Unlock()
		keys = append(keys, k)
		accts[k] = a
		if len(keys) == sharedChunk && !flush() {
			return
		}
	}
	if len(keys) > 0 {
		flush()
	}
}

// reconcileAll raises every held account's counter to a floor that is at
// most the true cluster total: the larger of
//
//   - the durable spend read now + this instance's amounts not yet in the
//     store but already sent (or given up): the store has every instance's
//     flushed spend, and amounts still unsent are left out because the
//     next batch adds them;
//   - this instance's own view: store value at load + its charges since,
//     minus what is unsent.
//
// It holds the ledger's flush lock so no write-behind moves amounts from
// memory to the store between the read and the sums.
func (s *sharedSync) reconcileAll() {
	s.wantReconcile = false
	s.lastReconcile = time.Now()
	l := s.l
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	var durable map[SharedKey]money.Pico
	if l.cfg.Durable != nil {
		// Short: the loop (and the write-behind) wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		accts, err := l.cfg.Durable(ctx)
		cancel()
		if err != nil {
			s.log.Warn("reading durable spend for reconciliation failed; using memory only", zap.Error(err))
		} else {
			durable = make(map[SharedKey]money.Pico, len(accts))
			for _, in := range accts {
				durable[SharedKey{in.Kind, in.ID, windowSeconds(in.ResetAt)}] = in.Spend
			}
		}
	}
	// Amounts in a failed store batch are not in the store yet.
	retried := map[SharedKey]money.Pico{}
	if l.retry != nil {
		for _, d := range l.retry.b.Deltas {
			k := SharedKey{d.Kind, d.ID, windowSeconds(d.Window)}
			retried[k] = addSat(retried[k], d.Amount)
		}
	}
	all := l.heldAccounts()
	floors := make(map[SharedKey]money.Pico, len(all))
	accts := make(map[SharedKey]*account, len(all))
	for _, a := range all {
		a.mu.Lock()
		k := SharedKey{a.kind, a.id, a.cwin}
		sent := a.pend - min(a.notShared(), a.pend)
		floor := max(a.spend-a.notShared(), 0)
		if d, ok := durable[k]; ok {
			floor = max(floor, addSat(addSat(d, sent), retried[k]))
		}
		a.mu.Unlock()
		if floor > 0 {
			floors[k] = floor
			accts[k] = a
		}
	}
	if !s.raise(floors, accts, true) {
		s.wantReconcile = true
	}
}

// final runs at Close: a last batch if the counters are up, then every
// unacknowledged amount is released to the store write-behind.
func (s *sharedSync) final() {
	if !s.down {
		if s.held != nil {
			ctx, cancel := s.ctx()
			if res, err := s.sc.AddRetry(ctx, s.held.id, s.held.deltas); err == nil {
				s.apply(s.held, res)
				s.held = nil
			}
			cancel()
		}
		if s.held == nil {
			if b := s.collect(); b != nil {
				ctx, cancel := s.ctx()
				if res, err := s.sc.AddRetry(ctx, b.id, b.deltas); err == nil {
					s.apply(b, res)
				} else {
					s.held = b
				}
				cancel()
			}
		}
	}
	s.goDownQuiet()
}

// goDownQuiet gives up whatever is unacknowledged without logging.
func (s *sharedSync) goDownQuiet() {
	if b := s.held; b != nil {
		s.held = nil
		for _, p := range b.parts {
			p.a.mu.Lock()
			if p.a.cwin == p.win {
				p.a.sending = max(p.a.sending-p.amt, 0)
				p.a.gaveUp = addSat(p.a.gaveUp, p.amt)
			}
			p.a.mu.Unlock()
		}
	}
	s.giveUpUnsent()
}

// Seeded reports whether the ledger has loaded the account from the store
// (Upsert), as opposed to not holding it or holding it only because it
// was charged.
func (l *Ledger) Seeded(kind, id string) bool {
	k, ok := kindIndex(kind)
	if !ok {
		return false
	}
	a := l.lookup(k, id)
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seeded
}

// SharedDown reports whether the shared counters are currently considered
// unavailable (budgets enforced on local counters). False without them.
func (l *Ledger) SharedDown() bool {
	if l.sh == nil {
		return false
	}
	return l.sh.downFlag.Load()
}

// Resync raises every held account's spend to what the store now says
// plus this ledger's charges not yet in it. A gateway reload that replaces
// the ledger loads the new one from the store while the old one still
// holds unwritten spend; once the old one has flushed, Resync brings the
// new one up to date. Each floor is at most the true spend (the store has
// every flushed charge, the rest is this ledger's own), so Resync never
// overcounts. Crossings it causes go to the sink.
func (l *Ledger) Resync(ctx context.Context, read DurableReader) error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	accts, err := read(ctx)
	if err != nil {
		return err
	}
	retried := map[SharedKey]money.Pico{}
	if l.retry != nil {
		for _, d := range l.retry.b.Deltas {
			k := SharedKey{d.Kind, d.ID, windowSeconds(d.Window)}
			retried[k] = addSat(retried[k], d.Amount)
		}
	}
	var cs []Crossing
	for _, in := range accts {
		k, ok := kindIndex(in.Kind)
		if !ok {
			continue
		}
		a := l.lookup(k, in.ID)
		if a == nil {
			continue
		}
		a.mu.Lock()
		if windowSeconds(a.window) == windowSeconds(in.ResetAt) {
			floor := addSat(addSat(max(in.Spend, 0), a.pend), retried[SharedKey{in.Kind, in.ID, windowSeconds(in.ResetAt)}])
			if floor > a.spend {
				old := a.eff()
				a.spend = floor
				if cur := a.eff(); cur >= a.next {
					cs = append(cs, a.fire(old, cur)...)
				}
			}
		}
		a.mu.Unlock()
	}
	if l.cfg.Sink != nil {
		for _, c := range cs {
			l.cfg.Sink.Crossing(c)
		}
	}
	return nil
}
