package smtptest

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func send(s *Server, auth sasl.Client) error {
	msg := "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.SendMail("a@example.com", []string{"b@example.com"}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

func TestRejectDownUp(t *testing.T) {
	s := Start(t, Options{})
	s.Reject(StageData, 2, 451, "later")
	for i := range 2 {
		err := send(s, nil)
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 451 {
			t.Fatalf("attempt %d: %v, want 451", i, err)
		}
	}
	if err := send(s, nil); err != nil {
		t.Fatalf("third attempt: %v", err)
	}
	got, err := s.WaitFor(1, time.Second)
	if err != nil || len(got) != 1 || got[0].From != "a@example.com" || !strings.Contains(string(got[0].Data), "Subject: hi") {
		t.Fatalf("%+v %v", got, err)
	}
	port := s.Port()
	s.Down()
	if err := send(s, nil); err == nil {
		t.Fatal("sent while down")
	}
	if err := s.Up(); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Fatalf("port changed")
	}
	if err := send(s, nil); err != nil {
		t.Fatalf("after Up: %v", err)
	}
	if s.Count() != 2 {
		t.Fatalf("count %d", s.Count())
	}
}

func TestAuthRequired(t *testing.T) {
	s := Start(t, Options{Username: "u", Password: "p"})
	if err := send(s, nil); err == nil {
		t.Fatal("accepted without AUTH")
	}
	if err := send(s, sasl.NewPlainClient("", "u", "wrong")); err == nil {
		t.Fatal("accepted a wrong password")
	}
	if err := send(s, sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || m[0].AuthUser != "u" {
		t.Fatalf("%+v", m)
	}
}
