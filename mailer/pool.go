package mailer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/store"
)

// Metrics receives delivery counts, labelled by backend name. The Caddy
// adapter backs it with Prometheus counters; nil disables it.
type Metrics interface {
	Queued(backend string)    // committed to the outbox
	Sent(backend string)      // accepted by the backend
	Failed(backend string)    // permanent failure or attempts exhausted
	Retried(backend string)   // transient failure, scheduled again
	QueueFull(backend string) // notification queue full; the poller takes over
}

// PoolConfig configures a Pool. Zero values take the documented defaults.
type PoolConfig struct {
	Outbox store.Outbox // required
	Sender Sender       // required
	// Workers is the number of concurrent sends. Default 4.
	Workers int
	// QueueLen bounds the in-memory notification queue between Enqueue and
	// the workers. When it is full Enqueue still succeeds (the message is
	// already committed) and the poller picks the message up. Default 1024.
	QueueLen int
	// MaxAttempts is the number of sends before a transient failure becomes
	// permanent. Default 8.
	MaxAttempts int
	// BaseBackoff and MaxBackoff bound the exponential backoff with full
	// jitter: attempt n waits a random time in [0, min(Max, Base·2^(n-1))],
	// and at least the backend's Retry-After. Defaults 2s and 10m.
	BaseBackoff, MaxBackoff time.Duration
	// Lease is how long a claimed message belongs to this worker; after a
	// crash it becomes due again when the lease expires. Default 2m.
	Lease time.Duration
	// SendTimeout bounds one send; it is kept below Lease so that a live
	// worker never loses its lease mid-send. Default Lease/2.
	SendTimeout time.Duration
	// PollInterval is how often due retries, messages enqueued while the
	// queue was full and messages enqueued by other instances are looked
	// for. Default 1s.
	PollInterval time.Duration
	Now          func() time.Time // default time.Now
	Logger       *zap.Logger      // default no-op
	Metrics      Metrics          // may be nil
}

func (c *PoolConfig) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.QueueLen <= 0 {
		c.QueueLen = 1024
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.BaseBackoff <= 0 {
		c.BaseBackoff = 2 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Minute
	}
	if c.MaxBackoff < c.BaseBackoff {
		c.MaxBackoff = c.BaseBackoff
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Minute
	}
	if c.SendTimeout <= 0 || c.SendTimeout > c.Lease*3/4 {
		c.SendTimeout = c.Lease / 2
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Pool delivers outbox messages with a fixed number of workers.
//
// Enqueue commits the message to the outbox and then wakes a worker
// without blocking. Workers claim due messages from the outbox (ClaimDue
// with a lease, so several instances can share one outbox), send them and
// record the result: MarkSent, MarkRetry with backoff, or MarkFailed. A
// worker that finds a message wakes another one, so a burst fans out to
// every worker; a ticker (PollInterval) catches retries that fall due,
// messages whose notification did not fit the queue and messages enqueued
// by other instances.
//
// Guarantee: at-least-once (see the package documentation for the one
// duplicate window and how each backend narrows it).
type Pool struct {
	cfg     PoolConfig
	backend string
	wake    chan struct{}

	mu      sync.Mutex
	state   int // 0 new, 1 running, 2 stopped
	stop    chan struct{}
	hard    context.Context // cancelled when Stop's deadline passes
	abort   context.CancelFunc
	wg      sync.WaitGroup
	markTTL time.Duration
}

// ErrPoolStopped is returned by Start on a stopped pool.
var ErrPoolStopped = errors.New("mailer: pool stopped")

// NewPool returns a Pool; call Start to begin delivery. It panics when
// Outbox or Sender is nil (a programming error).
func NewPool(cfg PoolConfig) *Pool {
	if cfg.Outbox == nil || cfg.Sender == nil {
		panic("mailer: NewPool needs an Outbox and a Sender")
	}
	cfg.setDefaults()
	return &Pool{
		cfg:     cfg,
		backend: cfg.Sender.Name(),
		wake:    make(chan struct{}, cfg.QueueLen),
		markTTL: 10 * time.Second,
	}
}

// Sender returns the pool's sender.
func (p *Pool) Sender() Sender { return p.cfg.Sender }

// Enqueue validates m, commits it to the outbox and wakes a worker. When
// it returns nil the message is durable: it will be sent after a crash or
// restart. It never waits for a send. The ID is the outbox row; a message
// whose IdempotencyKey was already enqueued returns the first message's ID
// and is not queued twice.
func (p *Pool) Enqueue(ctx context.Context, m Message) (int64, error) {
	if err := m.Validate(); err != nil {
		return 0, err
	}
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = newIdempotencyKey()
	}
	now := p.cfg.Now()
	id, err := p.cfg.Outbox.Enqueue(ctx, toOutbox(&m, now, now))
	if err != nil {
		return 0, fmt.Errorf("mailer: enqueue: %w", err)
	}
	p.count((Metrics).Queued)
	select {
	case p.wake <- struct{}{}:
	default:
		p.count((Metrics).QueueFull)
	}
	return id, nil
}

func toOutbox(m *Message, created, next time.Time) *store.OutboxMessage {
	return &store.OutboxMessage{
		IdempotencyKey: m.IdempotencyKey,
		Kind:           m.Kind,
		To:             append([]string(nil), m.To...),
		Subject:        m.Subject,
		HTML:           m.HTML,
		Text:           m.Text,
		Sensitive:      m.Sensitive,
		Status:         store.StatusPending,
		NextAttemptAt:  next,
		CreatedAt:      created,
	}
}

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "gen-" + hex.EncodeToString(b[:])
}

// Start launches the workers and the poller. Messages left pending by a
// previous run (or enqueued while stopped) are picked up at once.
func (p *Pool) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.state {
	case 1:
		return nil
	case 2:
		return ErrPoolStopped
	}
	p.state = 1
	p.stop = make(chan struct{})
	p.hard, p.abort = context.WithCancel(context.Background())
	for range p.cfg.Workers {
		p.wg.Add(1)
		go p.worker()
	}
	p.wg.Add(1)
	go p.poller()
	p.signal()
	return nil
}

// Stop stops taking work and waits for in-flight sends until ctx is done.
// Sends still running then are cancelled and their messages explicitly put
// back to pending (MarkRetry, due at once), so the next Start — in this
// process or another — sends them without waiting for the lease. Messages
// not yet claimed stay pending in the outbox. Stop returns ctx.Err() when
// the deadline cut sends short, nil otherwise.
func (p *Pool) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.state != 1 {
		p.state = 2
		p.mu.Unlock()
		return nil
	}
	p.state = 2
	close(p.stop)
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.abort()
		return nil
	case <-ctx.Done():
		p.abort()
		// Workers return promptly: sends are cancelled and each mark is
		// bounded by markTTL. A Sender that ignores its context must not
		// hang shutdown, so the wait is bounded too; its message then
		// returns to pending when the lease expires.
		t := time.NewTimer(p.markTTL + 5*time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			p.cfg.Logger.Error("email workers did not stop; abandoning them")
		}
		return ctx.Err()
	}
}

func (p *Pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Pool) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func (p *Pool) poller() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.signal()
		}
	}
}

func (p *Pool) worker() {
	defer p.wg.Done()
	for {
		if p.stopping() {
			return
		}
		msgs, err := p.cfg.Outbox.ClaimDue(p.hard, p.cfg.Now(), p.cfg.Lease, 1)
		if err != nil && p.hard.Err() == nil {
			p.cfg.Logger.Warn("email outbox claim failed", zap.Error(err))
		}
		if len(msgs) > 0 {
			// There may be more: hand the baton to an idle worker.
			p.signal()
			for i := range msgs {
				p.process(&msgs[i])
			}
			continue
		}
		select {
		case <-p.stop:
			return
		case <-p.wake:
			// Collapse piled-up notifications: this worker now drains the
			// outbox until nothing is due, waking others as it finds work.
			for drained := false; !drained; {
				select {
				case <-p.wake:
				default:
					drained = true
				}
			}
		}
	}
}

// process sends one claimed message and records the outcome.
func (p *Pool) process(om *store.OutboxMessage) {
	env := fromOutbox(om)
	log := p.cfg.Logger.With(zap.Int64("outbox_id", om.ID), zap.String("kind", om.Kind),
		zap.Int("attempt", om.Attempts), zap.String("backend", p.backend))

	var (
		pid string
		err error
	)
	if verr := env.Message.Validate(); verr != nil {
		err = Permanent(p.backend, 0, fmt.Errorf("stored message is not sendable: %w", verr))
	} else {
		sctx, cancel := context.WithTimeout(p.hard, p.cfg.SendTimeout)
		pid, err = p.cfg.Sender.Send(sctx, env)
		cancel()
	}

	// Record with a context of its own: a send cut short by Stop must
	// still be put back to pending.
	rctx, rcancel := context.WithTimeout(context.Background(), p.markTTL)
	defer rcancel()
	now := p.cfg.Now()
	switch {
	case err == nil:
		if merr := p.cfg.Outbox.MarkSent(rctx, om.ID, p.backend, pid, now); merr != nil {
			// The lease will expire and the message be sent again: the
			// documented duplicate window.
			log.Error("email sent but not recorded", zap.String("provider_id", pid), zap.Error(merr))
		}
		p.count((Metrics).Sent)
		log.Debug("email sent", zap.String("provider_id", pid))
	case p.hard.Err() != nil:
		if merr := p.cfg.Outbox.MarkRetry(rctx, om.ID, now, "interrupted by shutdown: "+err.Error()); merr != nil {
			log.Warn("email send interrupted; left to lease expiry", zap.Error(merr))
		}
		p.count((Metrics).Retried)
		log.Info("email send interrupted by shutdown; pending again", zap.Error(err))
	case IsPermanent(err):
		p.fail(rctx, log, om.ID, err.Error(), err)
	case om.Attempts >= p.cfg.MaxAttempts:
		p.fail(rctx, log, om.ID, fmt.Sprintf("gave up after %d attempts: %v", om.Attempts, err), err)
	default:
		wait := p.backoff(om.Attempts, RetryAfterOf(err))
		if merr := p.cfg.Outbox.MarkRetry(rctx, om.ID, now.Add(wait), err.Error()); merr != nil {
			log.Error("email retry not recorded; left to lease expiry", zap.Error(merr))
		}
		p.count((Metrics).Retried)
		log.Warn("email send failed; will retry", zap.Duration("in", wait), zap.Error(err))
	}
}

func (p *Pool) fail(ctx context.Context, log *zap.Logger, id int64, reason string, err error) {
	if merr := p.cfg.Outbox.MarkFailed(ctx, id, reason); merr != nil {
		log.Error("email failure not recorded", zap.Error(merr))
	}
	p.count((Metrics).Failed)
	log.Error("email failed", zap.String("reason", reason), zap.Int("code", CodeOf(err)))
}

// backoff returns the wait before the attempt after attempt n (n ≥ 1):
// full jitter over min(Max, Base·2^(n-1)), at least retryAfter.
func (p *Pool) backoff(n int, retryAfter time.Duration) time.Duration {
	ceil := p.cfg.BaseBackoff
	for i := 1; i < n && ceil < p.cfg.MaxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.cfg.MaxBackoff)
	d := time.Duration(mrand.Int64N(int64(ceil) + 1))
	return max(d, min(retryAfter, maxRetryAfter))
}

func (p *Pool) count(f func(Metrics, string)) {
	if p.cfg.Metrics != nil {
		f(p.cfg.Metrics, p.backend)
	}
}

func fromOutbox(om *store.OutboxMessage) *Envelope {
	return &Envelope{
		Message: Message{
			Kind: om.Kind, To: om.To, Subject: om.Subject, HTML: om.HTML, Text: om.Text,
			IdempotencyKey: om.IdempotencyKey, Sensitive: om.Sensitive,
		},
		OutboxID: om.ID,
		Attempt:  om.Attempts,
		Date:     om.CreatedAt,
	}
}

// SendNow sends m at once and returns the backend's answer, for the
// /email/test admin route. The message goes through the outbox like any
// other: it is committed first, hidden from the workers for one lease, sent
// directly by the caller and recorded (sent, failed, or pending for a retry
// by the workers after a transient error — the error is still returned so
// the admin sees it). A crash mid-send leaves it to the workers after the
// lease. If m.IdempotencyKey names a message that already exists, that
// message is not sent again: its stored outcome is returned.
func (p *Pool) SendNow(ctx context.Context, m Message) (providerID string, err error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = newIdempotencyKey()
	}
	now := p.cfg.Now()
	hold := now.Add(p.cfg.Lease)
	id, err := p.cfg.Outbox.Enqueue(ctx, toOutbox(&m, now, hold))
	if err != nil {
		return "", fmt.Errorf("mailer: enqueue: %w", err)
	}
	p.count((Metrics).Queued)
	stored, err := p.cfg.Outbox.GetMessage(ctx, id)
	if err != nil {
		return "", fmt.Errorf("mailer: read back message %d: %w", id, err)
	}
	if stored.Status != store.StatusPending || stored.Attempts != 0 || absDur(stored.NextAttemptAt.Sub(hold)) > time.Millisecond {
		switch stored.Status {
		case store.StatusSent:
			return stored.ProviderID, nil
		case store.StatusFailed:
			return "", Permanent(p.backend, 0, fmt.Errorf("message %d already failed: %s", id, stored.LastError))
		}
		return "", fmt.Errorf("mailer: message %d with this idempotency key is already %s", id, stored.Status)
	}

	sctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	env := &Envelope{Message: m, OutboxID: id, Attempt: 1, Date: now}
	pid, serr := p.cfg.Sender.Send(sctx, env)
	cancel()

	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), p.markTTL)
	defer rcancel()
	done := p.cfg.Now()
	switch {
	case serr == nil:
		err = p.cfg.Outbox.MarkSent(rctx, id, p.backend, pid, done)
		p.count((Metrics).Sent)
	case IsPermanent(serr):
		err = p.cfg.Outbox.MarkFailed(rctx, id, serr.Error())
		p.count((Metrics).Failed)
	default:
		err = p.cfg.Outbox.MarkRetry(rctx, id, done.Add(p.backoff(1, RetryAfterOf(serr))), serr.Error())
		p.count((Metrics).Retried)
		p.signal()
	}
	if err != nil {
		p.cfg.Logger.Error("test email outcome not recorded", zap.Int64("outbox_id", id), zap.Error(err))
	}
	return pid, serr
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
