package mailer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/store"
)

func fastPool(ob store.Outbox, s Sender, mut func(*PoolConfig)) *Pool {
	cfg := PoolConfig{Outbox: ob, Sender: s, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		PollInterval: 20 * time.Millisecond, Lease: 5 * time.Second, MaxAttempts: 1000}
	if mut != nil {
		mut(&cfg)
	}
	return NewPool(cfg)
}

// messageIDs returns the Message-ID of every received message, failing on a
// duplicate.
func uniqueMessageIDs(t *testing.T, got []smtptest.Received) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, r := range got {
		id := parseEmail(t, r.Data).Header.Get("Message-ID")
		if ids[id] {
			t.Errorf("message %s delivered twice", id)
		}
		ids[id] = true
	}
	return ids
}

// Queue 50 messages while the SMTP server is down, stop, then start a new
// pool on a reopened outbox with the server up: all 50 arrive, none twice.
// Five of them are additionally left claimed by a "crashed" instance whose
// lease must expire first.
func TestPoolRestartDeliversEverythingOnce(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Down()
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob1 := openStoreAt(t, path)
	sender := smtpSenderFor(t, srv, nil)

	p1 := fastPool(ob1, sender, nil)
	if err := p1.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 50 {
		if _, err := p1.Enqueue(ctx, testMessage(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Let the workers fail a few rounds against the closed port.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, _ := ob1.ListOutbox(ctx, store.StatusPending, 100)
		tried := 0
		for _, m := range l {
			if m.Attempts > 0 {
				tried++
			}
		}
		if tried >= 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("phase 1 done")
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := p1.Stop(sctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	cancel()
	if srv.Count() != 0 {
		t.Fatalf("server down but got %d", srv.Count())
	}
	counts, _ := ob1.OutboxCounts(ctx)
	if counts[store.StatusPending] != 50 {
		t.Fatalf("after stop: %v, want 50 pending", counts)
	}
	// A crashed instance holds five messages under a short lease.
	crashed, err := ob1.ClaimDue(ctx, time.Now().Add(200*time.Millisecond), 300*time.Millisecond, 5)
	if err != nil || len(crashed) != 5 {
		t.Fatalf("claim: %d %v", len(crashed), err)
	}
	if err := ob1.Close(); err != nil {
		t.Fatal(err)
	}

	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	ob2 := openStoreAt(t, path)
	p2 := fastPool(ob2, sender, nil)
	if err := p2.Start(); err != nil {
		t.Fatal(err)
	}
	defer p2.Stop(ctx)
	got, err := srv.WaitFor(50, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitCounts(t, ob2, store.StatusSent, 50, 5*time.Second)
	time.Sleep(200 * time.Millisecond) // a duplicate would show up now
	got = srv.Messages()
	if len(got) != 50 {
		t.Fatalf("got %d messages, want exactly 50", len(got))
	}
	ids := uniqueMessageIDs(t, got)
	for i := range 50 {
		if !ids[MessageID(fmt.Sprintf("test-%d", i), sender.From())] {
			t.Errorf("message %d missing", i)
		}
	}
}

// More messages than QueueLen, enqueued before Start (nobody reads the
// queue), with a poller that never ticks: the workers still drain all.
func TestPoolFullQueueStillDelivers(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	ob := openStore(t)
	met := newMetrics()
	p := fastPool(ob, smtpSenderFor(t, srv, nil), func(c *PoolConfig) {
		c.QueueLen = 4
		c.Workers = 3
		c.PollInterval = time.Hour
		c.Metrics = met
	})
	ctx := context.Background()
	const n = 60
	for i := range n {
		if _, err := p.Enqueue(ctx, testMessage(i)); err != nil {
			t.Fatal(err)
		}
	}
	if met.get("queue_full/smtp") != n-4 {
		t.Errorf("queue_full = %d, want %d", met.get("queue_full/smtp"), n-4)
	}
	p.Start()
	defer p.Stop(ctx)
	if _, err := srv.WaitFor(n, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := srv.Messages(); len(got) != n {
		t.Fatalf("%d messages, want %d", len(got), n)
	} else {
		uniqueMessageIDs(t, got)
	}
	if c := srv.MaxConcurrent(); c > 3 {
		t.Errorf("%d concurrent sessions with 3 workers", c)
	}
	waitCounts(t, ob, store.StatusSent, n, 5*time.Second)
	if met.get("sent/smtp") != n || met.get("queued/smtp") != n {
		t.Errorf("metrics %v", met.n)
	}
}

func TestPoolRefusesHeaderInjectionBeforeQueueing(t *testing.T) {
	ob := openStore(t)
	p := fastPool(ob, NewLogSender(nil, ""), nil)
	ctx := context.Background()
	bad := []func(*Message){
		func(m *Message) { m.Subject = "Hello\r\nBcc: everyone@example.com" },
		func(m *Message) { m.To = []string{"victim@example.com\nBcc: x@example.com"} },
		func(m *Message) { m.IdempotencyKey = "k\r\n" },
	}
	for _, mut := range bad {
		m := testMessage(1)
		mut(&m)
		if _, err := p.Enqueue(ctx, m); !errors.Is(err, ErrHeaderInjection) {
			t.Errorf("Enqueue: %v, want ErrHeaderInjection", err)
		}
		if _, err := p.SendNow(ctx, m); !errors.Is(err, ErrHeaderInjection) {
			t.Errorf("SendNow: %v, want ErrHeaderInjection", err)
		}
	}
	if l, _ := ob.ListOutbox(ctx, "", 10); len(l) != 0 {
		t.Fatalf("outbox holds %d messages", len(l))
	}
}

func TestPoolStopWithinDeadline(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(30 * time.Second)
	ob := openStore(t)
	s := smtpSenderFor(t, srv, func(c *SMTPConfig) { c.Timeout = time.Minute })
	p := fastPool(ob, s, func(c *PoolConfig) { c.Lease = 10 * time.Minute; c.Workers = 2 })
	p.Start()
	ctx := context.Background()
	var ids []int64
	for i := range 3 {
		id, err := p.Enqueue(ctx, testMessage(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitCounts(t, ob, store.StatusSending, 2, 5*time.Second)

	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Stop(sctx)
	el := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop: %v, want DeadlineExceeded", err)
	}
	if el > 2*time.Second {
		t.Fatalf("Stop took %v with a 300ms deadline", el)
	}
	// Interrupted sends are pending again at once, not left to the 10m lease.
	c, _ := ob.OutboxCounts(ctx)
	if c[store.StatusPending] != 3 || c[store.StatusSending] != 0 {
		t.Fatalf("after Stop: %v, want 3 pending", c)
	}
	for _, id := range ids[:2] {
		m, _ := ob.GetMessage(ctx, id)
		if m.Attempts == 1 && !strings.Contains(m.LastError, "shutdown") {
			t.Errorf("message %d last error %q", id, m.LastError)
		}
		if time.Until(m.NextAttemptAt) > time.Second {
			t.Errorf("message %d due at %v", id, m.NextAttemptAt)
		}
	}
	if err := p.Start(); !errors.Is(err, ErrPoolStopped) {
		t.Errorf("restart of a stopped pool: %v", err)
	}

	srv.SetDataDelay(0)
	p2 := fastPool(ob, s, nil)
	p2.Start()
	if _, err := srv.WaitFor(3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := p2.Stop(ctx); err != nil {
		t.Errorf("idle Stop: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("idle Stop took %v", time.Since(start))
	}
}

func TestPoolGivesUpAfterMaxAttempts(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Reject(smtptest.StageMail, -1, 421, "service not available")
	ob := openStore(t)
	p := fastPool(ob, smtpSenderFor(t, srv, nil), func(c *PoolConfig) { c.MaxAttempts = 3 })
	p.Start()
	defer p.Stop(context.Background())
	id, _ := p.Enqueue(context.Background(), testMessage(1))
	m := waitStatus(t, ob, id, store.StatusFailed, 10*time.Second)
	if m.Attempts != 3 || !strings.Contains(m.LastError, "gave up after 3 attempts") || !strings.Contains(m.LastError, "421") {
		t.Errorf("attempts %d reason %q", m.Attempts, m.LastError)
	}
}

func TestPoolIdempotentEnqueue(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	ob := openStore(t)
	p := fastPool(ob, smtpSenderFor(t, srv, nil), nil)
	ctx := context.Background()
	a, err := p.Enqueue(ctx, testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Enqueue(ctx, testMessage(1))
	if err != nil || a != b {
		t.Fatalf("second enqueue: %d %v, want %d", b, err, a)
	}
	// No key: a fresh one each time.
	m := testMessage(2)
	m.IdempotencyKey = ""
	c, _ := p.Enqueue(ctx, m)
	d, _ := p.Enqueue(ctx, m)
	if c == d {
		t.Fatalf("keyless messages collapsed")
	}
	p.Start()
	defer p.Stop(ctx)
	if _, err := srv.WaitFor(3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if srv.Count() != 3 {
		t.Fatalf("%d messages, want 3", srv.Count())
	}
}

// Two instances on one outbox file: each message is sent exactly once.
func TestPoolTwoInstancesShareOutbox(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	path := filepath.Join(t.TempDir(), "shared.db")
	obA, obB := openStoreAt(t, path), openStoreAt(t, path)
	s := smtpSenderFor(t, srv, nil)
	pA, pB := fastPool(obA, s, nil), fastPool(obB, s, nil)
	pA.Start()
	pB.Start()
	ctx := context.Background()
	for i := range 40 {
		ob := []*Pool{pA, pB}[i%2]
		if _, err := ob.Enqueue(ctx, testMessage(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.WaitFor(40, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	pA.Stop(ctx)
	pB.Stop(ctx)
	if got := srv.Messages(); len(got) != 40 {
		t.Fatalf("%d messages, want 40", len(got))
	} else {
		uniqueMessageIDs(t, got)
	}
}

func TestPoolSendNow(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	ob := openStore(t)
	p := fastPool(ob, smtpSenderFor(t, srv, nil), nil)
	p.Start()
	defer p.Stop(context.Background())
	ctx := context.Background()

	pid, err := p.SendNow(ctx, testMessage(1))
	if err != nil || !strings.HasPrefix(pid, "2") {
		t.Fatalf("SendNow: %q %v", pid, err)
	}
	l, _ := ob.ListOutbox(ctx, store.StatusSent, 10)
	if len(l) != 1 || l[0].ProviderID != pid || l[0].Backend != BackendSMTP {
		t.Fatalf("outbox %+v", l)
	}
	// Same key again: the stored answer, no second email.
	pid2, err := p.SendNow(ctx, testMessage(1))
	if err != nil || pid2 != pid || srv.Count() != 1 {
		t.Fatalf("repeat: %q %v count %d", pid2, err, srv.Count())
	}

	srv.Reject(smtptest.StageRcpt, 1, 550, "user unknown")
	if _, err := p.SendNow(ctx, testMessage(2)); !IsPermanent(err) || !strings.Contains(err.Error(), "user unknown") {
		t.Fatalf("550: %v", err)
	}
	if l, _ := ob.ListOutbox(ctx, store.StatusFailed, 10); len(l) != 1 {
		t.Fatalf("failed rows: %d", len(l))
	}

	// Transient: the admin sees the error; the workers deliver it later.
	srv.Reject(smtptest.StageData, 1, 451, "later")
	_, err = p.SendNow(ctx, testMessage(3))
	if err == nil || IsPermanent(err) || CodeOf(err) != 451 {
		t.Fatalf("451: %v", err)
	}
	if _, err := srv.WaitFor(2, 5*time.Second); err != nil {
		t.Fatalf("transient SendNow not retried by the pool: %v", err)
	}
}

func TestBackoffBounds(t *testing.T) {
	p := NewPool(PoolConfig{Outbox: openStore(t), Sender: NewLogSender(nil, ""), BaseBackoff: time.Second, MaxBackoff: time.Minute})
	for n := 1; n <= 12; n++ {
		ceil := min(time.Second<<(n-1), time.Minute)
		var maxSeen time.Duration
		for range 200 {
			d := p.backoff(n, 0)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: %v outside [0, %v]", n, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceil/2 {
			t.Errorf("attempt %d: max %v of 200 draws, jitter not spread over [0, %v]", n, maxSeen, ceil)
		}
		if d := p.backoff(n, 2*time.Hour); d != 2*time.Hour {
			t.Errorf("Retry-After not honoured as a minimum: %v", d)
		}
	}
}

// flakyOutbox fails MarkSent once, to check the at-least-once path: the
// message stays claimed and is sent again after its lease.
type flakyOutbox struct {
	store.Outbox
	failSent atomic.Int32
}

func (f *flakyOutbox) MarkSent(ctx context.Context, id int64, backend, pid string, at time.Time) error {
	if f.failSent.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return f.Outbox.MarkSent(ctx, id, backend, pid, at)
}

func TestPoolMarkSentFailureResendsAfterLease(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	ob := &flakyOutbox{Outbox: openStore(t)}
	ob.failSent.Store(1)
	s := smtpSenderFor(t, srv, nil)
	p := fastPool(ob, s, func(c *PoolConfig) { c.Lease = 300 * time.Millisecond })
	p.Start()
	defer p.Stop(context.Background())
	id, _ := p.Enqueue(context.Background(), testMessage(1))
	waitStatus(t, ob, id, store.StatusSent, 5*time.Second)
	got := srv.Messages()
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2 (the documented duplicate)", len(got))
	}
	a := parseEmail(t, got[0].Data).Header.Get("Message-ID")
	b := parseEmail(t, got[1].Data).Header.Get("Message-ID")
	if a != b {
		t.Errorf("duplicate has another Message-ID: %q vs %q", a, b)
	}
}
