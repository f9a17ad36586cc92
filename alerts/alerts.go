// Package alerts turns the ledger's budget crossings into alert emails:
// soft budget crossed, and max budget alerts at the default percentage or
// at the per-key thresholds of metadata.max_budget_alert_emails.
//
// The request path only calls Alerter.Crossing, which pushes the crossing
// onto a bounded channel and returns; it never blocks on I/O. When the
// channel is full the crossing goes to an overflow list the workers drain
// next (counted): crossings are naturally bounded (each threshold of an
// account fires at most once per budget window), so the list cannot grow
// without limit, and nothing is dropped.
//
// Workers de-duplicate in two steps: a ristretto TTL cache answers the
// common "already sent" case in memory, and a claim row in the store
// (store.Alerts.ClaimAlert, unique per entity, alert type and threshold,
// re-armed by a new budget window) is the authority across restarts and
// gateway instances. Ristretto's Set is asynchronous and may drop an
// entry, so a cache miss always falls through to the claim. The winner
// renders the email and commits it to the outbox (the mailer pool delivers
// and retries it); an enqueue that fails releases the claim, and a sweep
// releases the claims of alert emails the outbox finally marked failed, so
// that a permanent failure does not suppress the alert for the whole TTL.
package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/templates"
)

// Defaults.
const (
	DefaultTTL           = 24 * time.Hour // EMAIL_BUDGET_ALERT_TTL=86400
	DefaultQueue         = 4096
	DefaultWorkers       = 2
	DefaultSweepInterval = 30 * time.Second
)

// Store is what the alerter needs from the store: claims, and the failed
// messages of the outbox for the release sweep.
type Store interface {
	store.Alerts
	ListOutbox(ctx context.Context, status string, limit int) ([]store.OutboxMessage, error)
}

// Entity is what an alert needs to know about the key or user that crossed.
type Entity struct {
	// Email is the owner's address: the key's user's email for a key, the
	// user's own for a user ("" when there is none).
	Email string
	// KeyAlias is the key's alias (keys only; shown in the email).
	KeyAlias string
	// Metadata holds max_budget_alert_emails (extra recipients per threshold).
	Metadata map[string]any
}

// Directory looks entities up. ErrNoEntity (or store.ErrNotFound) means the
// key or user was deleted meanwhile: no email.
type Directory interface {
	Entity(ctx context.Context, kind, id string) (Entity, error)
}

// Renderer renders the two alert emails (templates.Renderer satisfies it).
type Renderer interface {
	SoftBudget(templates.BudgetAlertData) (templates.Rendered, error)
	MaxBudget(templates.BudgetAlertData) (templates.Rendered, error)
}

// Metrics receives counts; nil disables them. Stats keeps its own copy.
type Metrics interface {
	// Enqueued: an alert email was committed to the outbox (alertType).
	Enqueued(alertType string)
	// Suppressed: a duplicate crossing; reason is "cache" or "claim".
	Suppressed(alertType, reason string)
	// Overflow: the channel was full; the crossing went to the overflow list.
	Overflow()
	// NoRecipient: nobody to send to (no owner email, no extra recipients).
	NoRecipient(alertType string)
	// Error: a crossing that could not be handled (store, render, enqueue).
	Error(alertType string)
}

// Config configures an Alerter. Store, Directory, Renderer and Enqueue are required.
type Config struct {
	Store     Store
	Directory Directory
	Renderer  Renderer
	// Enqueue commits a message to the outbox (mailer.Pool.Enqueue).
	Enqueue func(ctx context.Context, m mailer.Message) (int64, error)
	// TTL: at most one email per entity, alert type and threshold per TTL
	// and budget window. Default 24h; <0 means claims never expire.
	TTL time.Duration
	// Queue bounds the channel between the request path and the workers.
	Queue int
	// Workers process crossings concurrently. Default 2.
	Workers int
	// SweepInterval is how often failed alert emails release their claims.
	// Default 30s; <0 disables the sweep.
	SweepInterval time.Duration
	// RetryAfter is how long a crossing whose store work failed (recipient
	// look-up, claim or enqueue, after a few quick retries) waits before it
	// is handled again; it doubles up to a minute. Default 5s.
	RetryAfter time.Duration
	// RetryFor is how long such a crossing keeps being retried, so that an
	// alert survives a store outage. Default 30m.
	RetryFor time.Duration
	// Now is the clock (default time.Now).
	Now     func() time.Time
	Logger  *zap.Logger
	Metrics Metrics
}

// Stats are the alerter's counters since it started.
type Stats struct {
	Received         int64 // crossings handed to Crossing
	Overflowed       int64 // of which went to the overflow list
	Enqueued         int64 // alert emails committed to the outbox
	SuppressedCache  int64 // duplicates answered by the cache
	SuppressedClaim  int64 // duplicates answered by the store claim
	NoRecipient      int64
	Gone             int64 // the key or user was deleted meanwhile
	Errors           int64
	Released         int64 // claims released (enqueue failure or failed email)
	Late             int64 // crossings that arrived after Stop
	QueueLen         int   // crossings waiting now (channel + overflow)
	OverflowWaiting  int
	CacheSetsDropped uint64 // ristretto Sets that were dropped (the claim covered them)
}

// Alerter is a spend.CrossingSink that sends budget alert emails.
type Alerter struct {
	cfg   Config
	log   *zap.Logger
	cache *ristretto.Cache[string, struct{}]

	queue chan spend.Crossing
	kick  chan struct{} // overflow has items

	mu       sync.RWMutex // guards stopped against Crossing's pushes
	stopped  bool
	ovMu     sync.Mutex
	overflow []spend.Crossing

	stop     chan struct{}
	hard     context.Context // cancelled when Stop's deadline passes
	abort    context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once

	sweptMu sync.Mutex
	swept   map[int64]struct{}

	retryMu       sync.Mutex
	retries       map[string]*retryState // by cache key: crossings waiting to be handled again
	retriesClosed bool                   // Stop handed them back

	n struct {
		received, overflowed, enqueued, supCache, supClaim, noRcpt, gone, errs, released, late atomic.Int64
	}
}

var _ spend.CrossingSink = (*Alerter)(nil)

// New validates cfg and starts the workers; stop them with Stop.
func New(cfg Config) (*Alerter, error) {
	if cfg.Store == nil || cfg.Directory == nil || cfg.Renderer == nil || cfg.Enqueue == nil {
		return nil, errors.New("alerts: Store, Directory, Renderer and Enqueue are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, struct{}]{
		NumCounters: 100_000, // ~10x the entries kept
		MaxCost:     10_000,  // entries (cost 1 each)
		BufferItems: 64,
		Metrics:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("alerts: cache: %w", err)
	}
	hard, abort := context.WithCancel(context.Background())
	a := &Alerter{
		cfg:   cfg,
		log:   log,
		cache: cache,
		queue: make(chan spend.Crossing, cfg.Queue),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		hard:  hard,
		abort: abort,
		swept: make(map[int64]struct{}),
	}
	for range cfg.Workers {
		a.wg.Add(1)
		go a.worker()
	}
	if cfg.SweepInterval > 0 {
		a.wg.Add(1)
		go a.sweeper()
	}
	return a, nil
}

// Crossing hands c to the workers without blocking: onto the channel, or,
// when it is full, onto the overflow list (counted). After Stop, a late
// crossing (a request that was already past the sink switch) is handled
// by a goroutine of its own.
func (a *Alerter) Crossing(c spend.Crossing) {
	a.n.received.Add(1)
	a.mu.RLock()
	if a.stopped {
		a.mu.RUnlock()
		a.n.late.Add(1)
		go a.handleLate(c)
		return
	}
	select {
	case a.queue <- c:
		a.mu.RUnlock()
		return
	default:
	}
	a.ovMu.Lock()
	a.overflow = append(a.overflow, c)
	a.ovMu.Unlock()
	a.mu.RUnlock()
	a.n.overflowed.Add(1)
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.Overflow()
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Alerter) handleLate(c spend.Crossing) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.handle(ctx, c, false) // the cache is closed (its Close races with Set)
}

func (a *Alerter) takeOverflow() []spend.Crossing {
	a.ovMu.Lock()
	defer a.ovMu.Unlock()
	if len(a.overflow) == 0 {
		return nil
	}
	out := a.overflow
	a.overflow = nil
	return out
}

func (a *Alerter) worker() {
	defer a.wg.Done()
	stopping := false
	for {
		var c spend.Crossing
		if !stopping {
			select {
			case c = <-a.queue:
			case <-a.kick:
				a.runOverflow()
				continue
			case <-a.stop:
				// Drain what was accepted before Stop; Stop's deadline
				// cancels a.hard, and what is left then is handed back.
				stopping = true
				continue
			}
		} else {
			if a.hard.Err() != nil {
				return // Stop hands the rest back
			}
			select {
			case c = <-a.queue:
			default:
				if !a.runOverflow() {
					return
				}
				continue
			}
		}
		if a.hard.Err() != nil {
			a.putBack([]spend.Crossing{c})
			return
		}
		a.handle(a.hard, c, true)
	}
}

// runOverflow handles the overflow list; false when it was empty.
func (a *Alerter) runOverflow() bool {
	ov := a.takeOverflow()
	for i, c := range ov {
		if a.hard.Err() != nil {
			a.putBack(ov[i:])
			return true
		}
		a.handle(a.hard, c, true)
	}
	return len(ov) > 0
}

func (a *Alerter) putBack(cs []spend.Crossing) {
	a.ovMu.Lock()
	a.overflow = append(a.overflow, cs...)
	a.ovMu.Unlock()
}

// Stop stops accepting crossings into the queue and drains it into claims
// and outbox messages until ctx is done. It returns the crossings it could
// not handle in time, so the caller can hand them to a successor (a reload
// installs the new alerter first). Crossings that arrive after Stop are
// handled one goroutine each.
func (a *Alerter) Stop(ctx context.Context) []spend.Crossing {
	var left []spend.Crossing
	a.stopOnce.Do(func() {
		a.mu.Lock()
		a.stopped = true
		a.mu.Unlock()
		close(a.stop)
		done := make(chan struct{})
		go func() { a.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			a.abort()
			<-done
		}
		a.abort()
	drain:
		for {
			select {
			case c := <-a.queue:
				left = append(left, c)
			default:
				break drain
			}
		}
		left = append(left, a.takeOverflow()...)
		left = append(left, a.takeRetries()...)
		a.cache.Close()
		if len(left) > 0 {
			a.log.Warn("budget alerts not handled before the stop deadline", zap.Int("crossings", len(left)))
		}
	})
	return left
}

// Stats returns the counters.
func (a *Alerter) Stats() Stats {
	a.ovMu.Lock()
	ov := len(a.overflow)
	a.ovMu.Unlock()
	s := Stats{
		Received:        a.n.received.Load(),
		Overflowed:      a.n.overflowed.Load(),
		Enqueued:        a.n.enqueued.Load(),
		SuppressedCache: a.n.supCache.Load(),
		SuppressedClaim: a.n.supClaim.Load(),
		NoRecipient:     a.n.noRcpt.Load(),
		Gone:            a.n.gone.Load(),
		Errors:          a.n.errs.Load(),
		Released:        a.n.released.Load(),
		Late:            a.n.late.Load(),
		QueueLen:        len(a.queue) + ov,
		OverflowWaiting: ov,
	}
	if m := a.cache.Metrics; m != nil {
		s.CacheSetsDropped = m.SetsDropped()
	}
	return s
}

// Window is the claim's budget window: budget_reset_at (RFC 3339, "" when
// the budget does not reset) + "|" + max_budget (USD, "" when none), as
// LiteLLM's get_budget_window. A soft budget alert also carries the soft
// budget ("|soft=<usd>"), so changing it re-arms that alert as well.
func Window(c spend.Crossing) string {
	var b strings.Builder
	if c.ResetAt != nil {
		b.WriteString(c.ResetAt.UTC().Format(time.RFC3339Nano))
	}
	b.WriteByte('|')
	if c.MaxBudget != nil {
		b.WriteString(c.MaxBudget.String())
	}
	if c.AlertType == spend.AlertSoftBudget && c.SoftBudget != nil {
		b.WriteString("|soft=")
		b.WriteString(c.SoftBudget.String())
	}
	return b.String()
}

// ClaimOf is the store claim a crossing maps to.
func ClaimOf(c spend.Crossing) store.AlertClaim {
	return store.AlertClaim{Kind: c.Kind, ID: c.ID, AlertType: c.AlertType, Threshold: c.Threshold, Window: Window(c)}
}

func cacheKey(cl store.AlertClaim) string {
	return cl.Kind + "\x00" + cl.ID + "\x00" + cl.AlertType + "\x00" + strconv.Itoa(cl.Threshold) + "\x00" + cl.Window
}

// handle de-duplicates, claims, renders and enqueues one crossing.
// useCache is false for late crossings, handled after the cache closed.
func (a *Alerter) handle(ctx context.Context, c spend.Crossing, useCache bool) {
	cl := ClaimOf(c)
	ck := cacheKey(cl)
	// A crossing waiting for a retry is forgotten once handled, unless
	// this attempt fails again (failRetry).
	keep := false
	defer func() {
		if !keep {
			a.retried(ck)
		}
	}()
	cache := a.cache
	if !useCache {
		cache = nil // ristretto's methods are no-ops on a nil cache
	}
	if _, hit := cache.Get(ck); hit {
		a.suppressed(c.AlertType, "cache")
		return
	}
	log := a.log.With(zap.String("kind", c.Kind), zap.String("id", c.ID), zap.String("alert", c.AlertType), zap.Int("threshold", c.Threshold))

	ent, err := a.cfg.Directory.Entity(ctx, c.Kind, c.ID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			a.n.gone.Add(1)
			log.Info("budget alert for a deleted entity; not sent")
			return
		}
		keep = true
		a.failRetry(log, c, ck, "looking up the alert's recipient", err)
		return
	}
	var extra []string
	if c.AlertType == spend.AlertMaxBudget {
		extra = ThresholdRecipients(ent.Metadata, c.Threshold)
	}
	to := mergeRecipients(ent.Email, extra, mailer.MaxRecipients)
	if len(to) == 0 {
		a.n.noRcpt.Add(1)
		if a.cfg.Metrics != nil {
			a.cfg.Metrics.NoRecipient(c.AlertType)
		}
		log.Warn("budget alert has no recipient (no owner email and no max_budget_alert_emails); not sent")
		cache.SetWithTTL(ck, struct{}{}, 1, a.cacheTTL()) // don't warn on every re-fire
		return
	}

	now := a.cfg.Now()
	won, err := a.claim(ctx, cl, now)
	if err != nil {
		keep = true
		a.failRetry(log, c, ck, "claiming the alert", err)
		return
	}
	cache.SetWithTTL(ck, struct{}{}, 1, a.cacheTTL())
	if !won {
		a.suppressed(c.AlertType, "claim")
		return
	}

	data := templates.BudgetAlertData{
		RecipientEmail:  to[0],
		KeyAlias:        ent.KeyAlias,
		EntityKind:      c.Kind,
		Spend:           c.NewSpend,
		MaxBudget:       c.MaxBudget,
		SoftBudget:      c.SoftBudget,
		Percent:         c.Threshold,
		ThresholdAmount: c.ThresholdAmount,
		ResetAt:         c.ResetAt,
	}
	var r templates.Rendered
	if c.AlertType == spend.AlertSoftBudget {
		r, err = a.cfg.Renderer.SoftBudget(data)
	} else {
		r, err = a.cfg.Renderer.MaxBudget(data)
	}
	if err != nil {
		a.release(log, cl, ck, cache)
		a.fail(log, c.AlertType, "rendering the alert", err)
		return
	}
	m := mailer.Message{
		Kind:           c.AlertType,
		To:             to,
		Subject:        r.Subject,
		HTML:           r.HTML,
		Text:           r.Text,
		IdempotencyKey: idempotencyKey(cl, now),
	}
	if err := a.enqueue(ctx, m); err != nil {
		a.release(log, cl, ck, cache)
		var perm *permanent
		if errors.As(err, &perm) {
			a.fail(log, c.AlertType, "queueing the alert email", err)
			return
		}
		keep = true
		a.failRetry(log, c, ck, "queueing the alert email", err)
		return
	}
	a.n.enqueued.Add(1)
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.Enqueued(c.AlertType)
	}
	log.Info("budget alert queued", zap.Strings("to", to), zap.String("spend", c.NewSpend.String()))
}

func (a *Alerter) cacheTTL() time.Duration {
	if a.cfg.TTL < 0 {
		return 0 // no expiry
	}
	return a.cfg.TTL
}

func (a *Alerter) suppressed(alertType, reason string) {
	if reason == "cache" {
		a.n.supCache.Add(1)
	} else {
		a.n.supClaim.Add(1)
	}
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.Suppressed(alertType, reason)
	}
}

// retryState tracks a crossing that is handled again after a store error.
type retryState struct {
	c     spend.Crossing
	first time.Time
	delay time.Duration
	timer *time.Timer
}

// failRetry records a failure of the store work for c and handles c again
// later, so a store outage delays an alert instead of losing it. The claim
// (if one was won) has been released by then. A retry bypasses the cache:
// ristretto applies Sets asynchronously, so the Del of a released claim
// may not stick.
func (a *Alerter) failRetry(log *zap.Logger, c spend.Crossing, ck, what string, err error) {
	a.fail(log, c.AlertType, what, err)
	first := a.cfg.RetryAfter
	if first <= 0 {
		first = 5 * time.Second
	}
	retryFor := a.cfg.RetryFor
	if retryFor <= 0 {
		retryFor = 30 * time.Minute
	}
	a.retryMu.Lock()
	defer a.retryMu.Unlock()
	if a.retriesClosed {
		log.Error("budget alert not retried: the alerter has stopped")
		return
	}
	if a.retries == nil {
		a.retries = make(map[string]*retryState)
	}
	rs := a.retries[ck]
	if rs == nil {
		rs = &retryState{c: c, first: time.Now(), delay: first}
		a.retries[ck] = rs
	}
	if time.Since(rs.first) > retryFor {
		delete(a.retries, ck)
		log.Error("budget alert given up after retrying", zap.Duration("for", retryFor))
		return
	}
	delay := rs.delay
	rs.delay = min(2*rs.delay, time.Minute)
	log.Warn("budget alert will be retried", zap.Duration("in", delay))
	rs.timer = time.AfterFunc(delay, func() { a.runRetry(ck) })
}

// runRetry handles a waiting crossing again.
func (a *Alerter) runRetry(ck string) {
	a.retryMu.Lock()
	rs := a.retries[ck]
	closed := a.retriesClosed
	a.retryMu.Unlock()
	if rs == nil || closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.handle(ctx, rs.c, false)
}

// retried forgets a crossing that no longer needs retrying.
func (a *Alerter) retried(ck string) {
	a.retryMu.Lock()
	delete(a.retries, ck)
	a.retryMu.Unlock()
}

// takeRetries stops the waiting retries and returns their crossings.
func (a *Alerter) takeRetries() []spend.Crossing {
	a.retryMu.Lock()
	defer a.retryMu.Unlock()
	a.retriesClosed = true
	var out []spend.Crossing
	for ck, rs := range a.retries {
		if rs.timer != nil {
			rs.timer.Stop()
		}
		out = append(out, rs.c)
		delete(a.retries, ck)
	}
	return out
}

func (a *Alerter) fail(log *zap.Logger, alertType, what string, err error) {
	a.n.errs.Add(1)
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.Error(alertType)
	}
	log.Error("budget alert not sent: "+what, zap.Error(err))
}

// retry runs f a few times with a short backoff: a store that is briefly
// busy (SQLite lock, a Postgres failover) should not cost an alert.
func retry(ctx context.Context, f func(context.Context) error) error {
	var err error
	wait := 50 * time.Millisecond
	for attempt := 0; attempt < 4; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = f(actx)
		cancel()
		var perm *permanent
		if err == nil || ctx.Err() != nil || errors.As(err, &perm) || attempt == 3 {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait *= 4
	}
	return err
}

// claim asks the store. A retried ClaimAlert after an ambiguous error (the
// insert committed, the answer was lost) would see its own row and say
// "lost": a lost alert rather than a duplicate, and only on that path.
func (a *Alerter) claim(ctx context.Context, cl store.AlertClaim, now time.Time) (bool, error) {
	var won bool
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		won, err = a.cfg.Store.ClaimAlert(ctx, cl, now, max(a.cfg.TTL, 0))
		return err
	})
	return won, err
}

// enqueue retries with the same idempotency key, so a retry after an
// ambiguous failure never queues the email twice.
func (a *Alerter) enqueue(ctx context.Context, m mailer.Message) error {
	return retry(ctx, func(ctx context.Context) error {
		_, err := a.cfg.Enqueue(ctx, m)
		if err != nil && isInvalid(err) {
			return &permanent{err}
		}
		return err
	})
}

type permanent struct{ error }

func (p *permanent) Unwrap() error { return p.error }

func isInvalid(err error) bool {
	return errors.Is(err, mailer.ErrInvalidAddress) || errors.Is(err, mailer.ErrInvalidMessage) || errors.Is(err, mailer.ErrHeaderInjection)
}

// release gives the claim up (with a context of its own: it also runs
// when the worker's context was cancelled) and forgets the cache entry.
func (a *Alerter) release(log *zap.Logger, cl store.AlertClaim, ck string, cache *ristretto.Cache[string, struct{}]) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cache.Del(ck)
	if err := a.cfg.Store.ReleaseAlert(ctx, cl); err != nil {
		log.Error("budget alert claim not released; the alert stays suppressed until its TTL", zap.Error(err))
		return
	}
	a.n.released.Add(1)
}

// claimRef is what an alert email's idempotency key carries, so that the
// sweep can find the claim of a failed message.
type claimRef struct {
	K  string `json:"k"`
	I  string `json:"i"`
	T  string `json:"t"`
	P  int    `json:"p"`
	W  string `json:"w"`
	At int64  `json:"at"` // the claim's sent_at (unix nanos)
}

const keyPrefix = "budget-alert."

// idempotencyKey is derived from the claim and the time it was won: the
// same email on every enqueue retry, a new one after the claim was
// released and won again.
func idempotencyKey(cl store.AlertClaim, at time.Time) string {
	js, _ := json.Marshal(claimRef{K: cl.Kind, I: cl.ID, T: cl.AlertType, P: cl.Threshold, W: cl.Window, At: at.UnixNano()})
	k := keyPrefix + base64.RawURLEncoding.EncodeToString(js)
	if len(k) > 500 {
		// An unusually long user id: still unique and stable, but the
		// sweep cannot map it back (the claim then ends with its TTL).
		sum := sha256.Sum256(js)
		return "budget-alert-h." + hex.EncodeToString(sum[:])
	}
	return k
}

func parseIdempotencyKey(k string) (store.AlertClaim, time.Time, bool) {
	rest, ok := strings.CutPrefix(k, keyPrefix)
	if !ok {
		return store.AlertClaim{}, time.Time{}, false
	}
	js, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return store.AlertClaim{}, time.Time{}, false
	}
	var r claimRef
	if err := json.Unmarshal(js, &r); err != nil {
		return store.AlertClaim{}, time.Time{}, false
	}
	return store.AlertClaim{Kind: r.K, ID: r.I, AlertType: r.T, Threshold: r.P, Window: r.W}, time.Unix(0, r.At), true
}

func (a *Alerter) sweeper() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			if _, err := a.Sweep(a.hard); err != nil {
				a.log.Warn("budget alert sweep failed", zap.Error(err))
			}
		}
	}
}

// sweepLimit bounds one sweep to the newest failed messages.
const sweepLimit = 200

// Sweep releases the claims of alert emails the outbox marked failed
// (permanent refusal, or attempts exhausted), so that the alert can fire
// again on its next crossing (after a restart, a reset or a budget change:
// the ledger fires each threshold once per window) instead of staying
// suppressed for the TTL. A claim is released only if it is still the one
// the failed email was sent for (same window and claim time): a claim won
// again since then is left alone. It returns how many claims it released.
func (a *Alerter) Sweep(ctx context.Context) (int, error) {
	msgs, err := a.cfg.Store.ListOutbox(ctx, store.StatusFailed, sweepLimit)
	if err != nil {
		return 0, err
	}
	released := 0
	for _, m := range msgs {
		if m.Kind != spend.AlertSoftBudget && m.Kind != spend.AlertMaxBudget {
			continue
		}
		a.sweptMu.Lock()
		_, done := a.swept[m.ID]
		a.sweptMu.Unlock()
		if done {
			continue
		}
		cl, at, ok := parseIdempotencyKey(m.IdempotencyKey)
		if ok {
			recs, err := a.cfg.Store.ListAlerts(ctx, cl.Kind, cl.ID)
			if err != nil {
				return released, err
			}
			for _, r := range recs {
				if r.AlertClaim == cl && r.SentAt.UnixNano() == at.UnixNano() {
					if err := a.cfg.Store.ReleaseAlert(ctx, cl); err != nil {
						return released, err
					}
					a.cache.Del(cacheKey(cl))
					a.n.released.Add(1)
					released++
					a.log.Info("released the claim of a failed budget alert email", zap.Int64("outbox_id", m.ID),
						zap.String("kind", cl.Kind), zap.String("id", cl.ID), zap.String("alert", cl.AlertType), zap.Int("threshold", cl.Threshold))
					break
				}
			}
		}
		a.sweptMu.Lock()
		if len(a.swept) > 10*sweepLimit {
			clear(a.swept) // re-checking is harmless (the claim time no longer matches)
		}
		a.swept[m.ID] = struct{}{}
		a.sweptMu.Unlock()
	}
	return released, nil
}
