package mailer

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMessageValidate(t *testing.T) {
	ok := testMessage(1)
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid message: %v", err)
	}
	cases := []struct {
		name string
		mut  func(*Message)
		want error
	}{
		{"CRLF in subject", func(m *Message) { m.Subject = "hi\r\nBcc: victim@example.com" }, ErrHeaderInjection},
		{"LF in subject", func(m *Message) { m.Subject = "hi\nX: y" }, ErrHeaderInjection},
		{"CR in subject", func(m *Message) { m.Subject = "hi\rX: y" }, ErrHeaderInjection},
		{"CRLF in to", func(m *Message) { m.To = []string{"a@example.com\r\nBcc: b@example.com"} }, ErrHeaderInjection},
		{"LF in display name", func(m *Message) { m.To = []string{"\"Eve\nBcc: x@y.z\" <a@example.com>"} }, ErrHeaderInjection},
		{"NUL", func(m *Message) { m.Subject = "a\x00b" }, ErrHeaderInjection},
		{"CRLF in idempotency key", func(m *Message) { m.IdempotencyKey = "k\r\nX-Evil: 1" }, ErrHeaderInjection},
		{"no recipient", func(m *Message) { m.To = nil }, ErrInvalidAddress},
		{"bad address", func(m *Message) { m.To = []string{"not an address"} }, ErrInvalidAddress},
		{"two addresses in one", func(m *Message) { m.To = []string{"a@example.com, b@example.com"} }, ErrInvalidAddress},
		{"no html", func(m *Message) { m.HTML = " " }, ErrInvalidMessage},
		{"no text", func(m *Message) { m.Text = "" }, ErrInvalidMessage},
		{"no subject", func(m *Message) { m.Subject = "" }, ErrInvalidMessage},
	}
	for _, tc := range cases {
		m := testMessage(1)
		tc.mut(&m)
		if err := m.Validate(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func FuzzMessageValidate(f *testing.F) {
	f.Add("a@example.com", "LiteLLM: hi", "k1")
	f.Add("Bob <b@example.com>", "x\r\nBcc: y@z", "k2")
	f.Add("\"a\nb\" <c@d.e>", "s", "k\n")
	f.Fuzz(func(t *testing.T, to, subject, key string) {
		m := Message{To: []string{to}, Subject: subject, HTML: "<p>x</p>", Text: "x", IdempotencyKey: key}
		err := m.Validate()
		if err != nil {
			return
		}
		// Whatever passes must be free of header-breaking bytes and parse.
		for _, v := range []string{to, subject, key} {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("accepted CR/LF/NUL in %q", v)
			}
		}
		// And the SMTP sender must be able to build it.
		s := &SMTPSender{from: "n@example.com"}
		s.addr, _ = ParseAddress("From", s.from)
		msg, err := s.buildMsg(&Envelope{Message: m})
		if err != nil {
			t.Fatalf("validated message did not build: %v", err)
		}
		var buf bytes.Buffer
		if _, err := msg.WriteTo(&buf); err != nil {
			t.Fatalf("write: %v", err)
		}
		hdr := buf.String()[:strings.Index(buf.String(), "\r\n\r\n")]
		for _, line := range strings.Split(hdr, "\r\n") {
			if strings.HasPrefix(strings.ToLower(line), "bcc:") {
				t.Fatalf("injected header: %q", line)
			}
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "7", "-3", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999", "NaN", "+Inf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, testNow)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("%q → %v", v, d)
		}
	})
}

func TestMessageIDStable(t *testing.T) {
	a := MessageID("key-1", "LiteLLM <n@alerts.example.com>")
	if a != MessageID("key-1", "n@alerts.example.com") {
		t.Errorf("display name changed the id")
	}
	if a == MessageID("key-2", "n@alerts.example.com") {
		t.Errorf("different keys, same id")
	}
	if !strings.HasPrefix(a, "<") || !strings.HasSuffix(a, "@alerts.example.com>") {
		t.Errorf("id %q", a)
	}
}

func TestRedactKeys(t *testing.T) {
	in := "Your key: sk-AbCdEf123456_-xyz9 and sk-1234 done; not a key: desk-top"
	got := RedactKeys(in)
	if strings.Contains(got, "AbCdEf") || !strings.Contains(got, "sk-...xyz9") || !strings.Contains(got, "sk-...1234") {
		t.Errorf("got %q", got)
	}
}

func TestLogSenderRedacts(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := NewLogSender(zap.New(core), "")
	m := testMessage(1)
	m.Text = "Your new key is sk-9f8e7d6c5b4a3210abcd and it works."
	m.Kind = "key_created"
	pid, err := s.Send(context.Background(), &Envelope{Message: m})
	if err != nil || pid == "" {
		t.Fatalf("send: %q %v", pid, err)
	}
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries", len(entries))
	}
	f := entries[0].ContextMap()
	if f["kind"] != "key_created" || f["subject"] != m.Subject {
		t.Errorf("fields %v", f)
	}
	if to, _ := f["to"].([]any); len(to) != 1 || to[0] != "user1@example.com" {
		t.Errorf("to %v", f["to"])
	}
	text, _ := f["text"].(string)
	if strings.Contains(text, "9f8e7d6c5b4a3210") || !strings.Contains(text, "sk-...abcd") {
		t.Errorf("text not redacted: %q", text)
	}
}

var testNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
