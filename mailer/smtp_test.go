package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/store"
)

func sendOne(t *testing.T, s Sender, m Message) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, &Envelope{Message: m, OutboxID: 1, Attempt: 1, Date: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)})
}

func TestSMTPPlainMultipart(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	s := smtpSenderFor(t, srv, nil)
	m := testMessage(1)
	m.To = []string{"alice@example.com", "Bob <bob@example.com>"}
	m.Subject = "LiteLLM: Über-budget — 80% reached"
	pid, err := sendOne(t, s, m)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if !strings.HasPrefix(pid, "2") { // the server's 250 reply
		t.Errorf("providerID = %q, want the server reply", pid)
	}
	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("server got %d messages, want 1", len(got))
	}
	r := got[0]
	if r.From != "notifications@llmspend.test" {
		t.Errorf("MAIL FROM = %q", r.From)
	}
	if strings.Join(r.To, ",") != "alice@example.com,bob@example.com" {
		t.Errorf("RCPT TO = %v", r.To)
	}
	if r.TLS {
		t.Errorf("TLS=False session was encrypted")
	}
	p := parseEmail(t, r.Data)
	if strings.Join(p.Order, ",") != "text/plain,text/html" {
		t.Errorf("parts = %v, want text/plain then text/html", p.Order)
	}
	if strings.TrimSpace(p.Text) != m.Text || strings.TrimSpace(p.HTML) != m.HTML {
		t.Errorf("bodies: text %q html %q", p.Text, p.HTML)
	}
	if want := MessageID(m.IdempotencyKey, s.From()); p.Header.Get("Message-ID") != want {
		t.Errorf("Message-ID = %q, want %q", p.Header.Get("Message-ID"), want)
	}
	if !strings.HasSuffix(p.Header.Get("Message-ID"), "@llmspend.test>") {
		t.Errorf("Message-ID %q should use the sender's domain", p.Header.Get("Message-ID"))
	}
	d, err := p.Header.Date()
	if err != nil || !d.Equal(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("Date = %v (%v), want the envelope date", d, err)
	}
	dec := new(mimeDecoder)
	if subj := dec.decode(p.Header.Get("Subject")); subj != m.Subject {
		t.Errorf("Subject = %q, want %q", subj, m.Subject)
	}
	if from := p.Header.Get("From"); !strings.Contains(from, "notifications@llmspend.test") || !strings.Contains(from, "LiteLLM") {
		t.Errorf("From = %q", from)
	}

	// Same idempotency key, second attempt: the same Message-ID.
	if _, err := sendOne(t, s, m); err != nil {
		t.Fatal(err)
	}
	p2 := parseEmail(t, srv.Messages()[1].Data)
	if p2.Header.Get("Message-ID") != p.Header.Get("Message-ID") {
		t.Errorf("Message-ID changed across attempts: %q vs %q", p.Header.Get("Message-ID"), p2.Header.Get("Message-ID"))
	}
}

func TestSMTPStartTLSRequired(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{StartTLS: true, RequireTLS: true})
	s := smtpSenderFor(t, srv, func(c *SMTPConfig) {
		c.TLS = "True"
		c.TLSConfig = &tls.Config{RootCAs: srv.CertPool()}
	})
	if s.TLSMode() != TLSStartTLS {
		t.Fatalf("mode %q", s.TLSMode())
	}
	if _, err := sendOne(t, s, testMessage(1)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := srv.Messages(); len(got) != 1 || !got[0].TLS {
		t.Fatalf("want one message over TLS, got %+v", got)
	}

	// Without the test CA the certificate is refused: no fallback.
	bad := smtpSenderFor(t, srv, func(c *SMTPConfig) { c.TLS = "True" })
	_, err := sendOne(t, bad, testMessage(2))
	if err == nil || IsPermanent(err) {
		t.Fatalf("untrusted certificate: err = %v, want transient error", err)
	}
	if srv.Count() != 1 {
		t.Fatalf("server got a message despite the untrusted certificate")
	}
}

func TestSMTPTLSTrueWithoutStartTLSIsRefused(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{}) // no STARTTLS offered
	s := smtpSenderFor(t, srv, func(c *SMTPConfig) { c.TLS = "True" })
	_, err := sendOne(t, s, testMessage(1))
	if err == nil {
		t.Fatal("sent in plaintext although SMTP_TLS=True")
	}
	if !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("error %q should mention STARTTLS", err)
	}
	if srv.Count() != 0 {
		t.Fatalf("server received %d messages in plaintext", srv.Count())
	}
	// Unset SMTP_TLS means True, as in LiteLLM.
	s2 := smtpSenderFor(t, srv, func(c *SMTPConfig) { c.TLS = "" })
	if _, err := sendOne(t, s2, testMessage(2)); err == nil || srv.Count() != 0 {
		t.Fatalf("default TLS mode fell back to plaintext (err %v)", err)
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{ImplicitTLS: true, Username: "u", Password: "p"})
	s := smtpSenderFor(t, srv, func(c *SMTPConfig) {
		c.TLS = "implicit"
		c.Username, c.Password = "u", "p"
		c.TLSConfig = srv.ClientTLSConfig()
	})
	if _, err := sendOne(t, s, testMessage(1)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := srv.Messages(); len(got) != 1 || !got[0].TLS || got[0].AuthUser != "u" {
		t.Fatalf("got %+v", got)
	}
}

func TestSMTPPort465MeansImplicit(t *testing.T) {
	mode, err := SMTPConfig{Host: "h", Port: 465}.EffectiveTLS()
	if err != nil || mode != TLSImplicit {
		t.Fatalf("port 465: %q %v", mode, err)
	}
	mode, _ = SMTPConfig{Host: "h", Port: 465, TLS: "False"}.EffectiveTLS()
	if mode != TLSNone {
		t.Fatalf("port 465 with SMTP_TLS=False: %q", mode)
	}
}

func TestSMTPAuthPlain(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{StartTLS: true, Username: "mailer", Password: "s3cret"})
	s := smtpSenderFor(t, srv, func(c *SMTPConfig) {
		c.TLS = "True"
		c.Username, c.Password = "mailer", "s3cret"
		c.TLSConfig = srv.ClientTLSConfig()
	})
	if _, err := sendOne(t, s, testMessage(1)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := srv.Messages(); len(got) != 1 || got[0].AuthUser != "mailer" || !got[0].TLS {
		t.Fatalf("got %+v", got)
	}

	wrong := smtpSenderFor(t, srv, func(c *SMTPConfig) {
		c.TLS = "True"
		c.Username, c.Password = "mailer", "nope"
		c.TLSConfig = srv.ClientTLSConfig()
	})
	_, err := sendOne(t, wrong, testMessage(2))
	if !IsPermanent(err) || CodeOf(err) != 535 {
		t.Fatalf("wrong password: err = %v (code %d), want permanent 535", err, CodeOf(err))
	}

	// No username: no AUTH, and this server requires it (530 → permanent).
	anon := smtpSenderFor(t, srv, func(c *SMTPConfig) { c.TLS = "True"; c.TLSConfig = srv.ClientTLSConfig() })
	if _, err := sendOne(t, anon, testMessage(3)); !IsPermanent(err) {
		t.Fatalf("no auth: %v", err)
	}
	if srv.Count() != 1 {
		t.Fatalf("count %d", srv.Count())
	}
}

func TestSMTPClassification(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	s := smtpSenderFor(t, srv, nil)

	srv.Reject(smtptest.StageData, 1, 451, "try again later")
	_, err := sendOne(t, s, testMessage(1))
	if err == nil || IsPermanent(err) || CodeOf(err) != 451 {
		t.Fatalf("451: %v (code %d), want transient 451", err, CodeOf(err))
	}
	srv.Reject(smtptest.StageRcpt, 1, 550, "no such user")
	_, err = sendOne(t, s, testMessage(2))
	if !IsPermanent(err) || CodeOf(err) != 550 {
		t.Fatalf("550: %v, want permanent 550", err)
	}
	srv.Down()
	_, err = sendOne(t, s, testMessage(3))
	if err == nil || IsPermanent(err) {
		t.Fatalf("server down: %v, want transient", err)
	}
	var se *SendError
	if !errors.As(err, &se) || se.Backend != BackendSMTP {
		t.Fatalf("not a SendError: %T", err)
	}
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	if _, err := sendOne(t, s, testMessage(4)); err != nil {
		t.Fatalf("after Up: %v", err)
	}
	if srv.Count() != 1 {
		t.Fatalf("count %d, want 1", srv.Count())
	}
}

func TestSMTPCancelInterruptsSend(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(10 * time.Second)
	s := smtpSenderFor(t, srv, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Send(ctx, &Envelope{Message: testMessage(1)})
	if err == nil || IsPermanent(err) {
		t.Fatalf("err = %v, want transient", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancel took %v", el)
	}
}

// Pool-level SMTP cases: 451 then accept → exactly one delivery; 550 → failed.
func TestPoolSMTPTransientThenAccept(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Reject(smtptest.StageData, 2, 451, "greylisted")
	ob := openStore(t)
	met := newMetrics()
	p := NewPool(PoolConfig{Outbox: ob, Sender: smtpSenderFor(t, srv, nil), BaseBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond, Metrics: met, Logger: testLogger(t)})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	id, err := p.Enqueue(context.Background(), testMessage(1))
	if err != nil {
		t.Fatal(err)
	}
	m := waitStatus(t, ob, id, store.StatusSent, 10*time.Second)
	if m.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", m.Attempts)
	}
	if m.Backend != BackendSMTP || m.ProviderID == "" {
		t.Errorf("backend %q provider %q", m.Backend, m.ProviderID)
	}
	time.Sleep(100 * time.Millisecond)
	if srv.Count() != 1 {
		t.Fatalf("server got %d messages, want exactly 1", srv.Count())
	}
	if met.get("retried/smtp") != 2 || met.get("sent/smtp") != 1 || met.get("queued/smtp") != 1 {
		t.Errorf("metrics %v", met.n)
	}
}

func TestPoolSMTPPermanentFailure(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Reject(smtptest.StageRcpt, -1, 550, "mailbox unavailable")
	ob := openStore(t)
	met := newMetrics()
	p := NewPool(PoolConfig{Outbox: ob, Sender: smtpSenderFor(t, srv, nil), BaseBackoff: 10 * time.Millisecond,
		PollInterval: 20 * time.Millisecond, Metrics: met})
	p.Start()
	defer p.Stop(context.Background())
	m := testMessage(1)
	m.Sensitive = true
	id, err := p.Enqueue(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, ob, id, store.StatusFailed, 10*time.Second)
	if got.Attempts != 1 {
		t.Errorf("attempts = %d, want 1 (permanent: no retry)", got.Attempts)
	}
	if !strings.Contains(got.LastError, "550") || !strings.Contains(got.LastError, "mailbox unavailable") {
		t.Errorf("reason %q should carry the server's answer", got.LastError)
	}
	if got.HTML != "" || got.Text != "" {
		t.Errorf("sensitive body kept after failure")
	}
	if met.get("failed/smtp") != 1 {
		t.Errorf("metrics %v", met.n)
	}
}

func TestSMTPOpportunistic(t *testing.T) {
	withTLS := smtptest.Start(t, smtptest.Options{StartTLS: true})
	s := smtpSenderFor(t, withTLS, func(c *SMTPConfig) { c.TLS = TLSOpportunistic; c.TLSConfig = withTLS.ClientTLSConfig() })
	if _, err := sendOne(t, s, testMessage(1)); err != nil {
		t.Fatal(err)
	}
	if m := withTLS.Messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("opportunistic did not use offered STARTTLS: %+v", m)
	}
	plain := smtptest.Start(t, smtptest.Options{})
	s2 := smtpSenderFor(t, plain, func(c *SMTPConfig) { c.TLS = TLSOpportunistic })
	if _, err := sendOne(t, s2, testMessage(1)); err != nil || plain.Count() != 1 {
		t.Fatalf("opportunistic without STARTTLS: %v", err)
	}
}
