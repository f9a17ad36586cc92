package mailer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/sqlite"
)

// openStore opens a real SQLite outbox in a temporary directory.
func openStore(tb testing.TB) *sqlite.Store {
	tb.Helper()
	return openStoreAt(tb, filepath.Join(tb.TempDir(), "llmspend.db"))
}

func openStoreAt(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(path)
	if err != nil {
		tb.Fatalf("open sqlite: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func testMessage(i int) Message {
	return Message{
		Kind:           "test",
		To:             []string{fmt.Sprintf("user%d@example.com", i)},
		Subject:        fmt.Sprintf("LiteLLM: test %d", i),
		HTML:           fmt.Sprintf("<p>Hello <b>%d</b> &amp; welcome</p>", i),
		Text:           fmt.Sprintf("Hello %d & welcome", i),
		IdempotencyKey: fmt.Sprintf("test-%d", i),
	}
}

func smtpSenderFor(tb testing.TB, srv *smtptest.Server, mut func(*SMTPConfig)) *SMTPSender {
	tb.Helper()
	cfg := SMTPConfig{
		Host:        srv.Host(),
		Port:        srv.Port(),
		TLS:         "False",
		SenderEmail: "LiteLLM <notifications@llmspend.test>",
		DialTimeout: 2 * time.Second,
		Timeout:     5 * time.Second,
	}
	if mut != nil {
		mut(&cfg)
	}
	s, err := NewSMTPSender(cfg, "")
	if err != nil {
		tb.Fatalf("NewSMTPSender: %v", err)
	}
	return s
}

func testLogger(tb testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(tb)
	}
	return zap.NewNop()
}

// parsed is a received email taken apart with net/mail and mime/multipart.
type parsed struct {
	Header mail.Header
	Text   string
	HTML   string
	Order  []string // part content types in order
}

func parseEmail(tb testing.TB, raw []byte) parsed {
	tb.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("parse message: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		tb.Fatalf("content-type: %v", err)
	}
	if mt != "multipart/alternative" {
		tb.Fatalf("Content-Type = %q, want multipart/alternative\n%s", mt, raw)
	}
	p := parsed{Header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("next part: %v", err)
		}
		body, err := io.ReadAll(part) // quoted-printable is decoded by NextPart
		if err != nil {
			tb.Fatalf("read part: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		p.Order = append(p.Order, ct)
		switch ct {
		case "text/plain":
			p.Text = strings.ReplaceAll(string(body), "\r\n", "\n")
		case "text/html":
			p.HTML = strings.ReplaceAll(string(body), "\r\n", "\n")
		}
	}
	return p
}

// countingMetrics records Metrics calls.
type countingMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func newMetrics() *countingMetrics { return &countingMetrics{n: map[string]int{}} }

func (m *countingMetrics) add(k string) {
	m.mu.Lock()
	m.n[k]++
	m.mu.Unlock()
}
func (m *countingMetrics) get(k string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[k]
}
func (m *countingMetrics) Queued(b string)    { m.add("queued/" + b) }
func (m *countingMetrics) Sent(b string)      { m.add("sent/" + b) }
func (m *countingMetrics) Failed(b string)    { m.add("failed/" + b) }
func (m *countingMetrics) Retried(b string)   { m.add("retried/" + b) }
func (m *countingMetrics) QueueFull(b string) { m.add("queue_full/" + b) }

// waitStatus polls the outbox until message id has status, or fails.
func waitStatus(tb testing.TB, ob store.Outbox, id int64, status string, timeout time.Duration) *store.OutboxMessage {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, err := ob.GetMessage(context.Background(), id)
		if err != nil {
			tb.Fatalf("get message %d: %v", id, err)
		}
		if m.Status == status {
			return m
		}
		if time.Now().After(deadline) {
			tb.Fatalf("message %d: status %q (last error %q), want %q", id, m.Status, m.LastError, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitCounts(tb testing.TB, ob store.Outbox, status string, n int, timeout time.Duration) map[string]int {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := ob.OutboxCounts(context.Background())
		if err != nil {
			tb.Fatalf("counts: %v", err)
		}
		if c[status] >= n {
			return c
		}
		if time.Now().After(deadline) {
			tb.Fatalf("outbox counts %v: want %d %s", c, n, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
