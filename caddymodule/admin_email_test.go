package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/mailer/smtptest"
)

// smtpBlock configures the gateway to send through an in-process SMTP server.
func smtpBlock(s *smtptest.Server) string {
	return fmt.Sprintf("email smtp {\n\t\t\tsmtp_host %s\n\t\t\tsmtp_port %d\n\t\t\tsmtp_tls False\n\t\t\tfrom llmspend@example.com\n\t\t\tbase_backoff 50ms\n\t\t}", s.Host(), s.Port())
}

func TestEmailTestRouteAndOutbox(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv))

	out := g.mustAdmin("POST", "/email/test", map[string]any{"to": "ops@example.com"})
	if out["ok"] != true || out["backend"] != "smtp" {
		t.Fatalf("email/test: %v", out)
	}
	msgs, err := srv.WaitFor(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].To[0] != "ops@example.com" || !strings.Contains(string(msgs[0].Data), "multipart/alternative") {
		t.Fatalf("received %+v", msgs)
	}

	ob := g.mustAdmin("GET", "/email/outbox?status=sent", nil)
	if ob["backend"] != "smtp" || ob["configured"] != true {
		t.Fatalf("outbox: %v", ob)
	}
	list := ob["messages"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["status"] != "sent" {
		t.Fatalf("outbox messages: %v", list)
	}

	// A permanent refusal is reported with the server's answer.
	srv.Reject(smtptest.StageRcpt, 1, 550, "no such mailbox")
	r := g.admin("POST", "/email/test", map[string]any{"to": "ghost@example.com"})
	if r.Status != http.StatusBadGateway || !strings.Contains(string(r.Body), "550") {
		t.Fatalf("refused send: %d %s", r.Status, r.Body)
	}

	// Bad input.
	if r := g.admin("POST", "/email/test", map[string]any{"to": "x@example.com\r\nBcc: evil@example.com"}); r.Status != 400 {
		t.Fatalf("header injection: %d %s", r.Status, r.Body)
	}
	if r := g.admin("GET", "/email/outbox?status=bogus", nil); r.Status != 400 {
		t.Fatalf("bad status filter: %d", r.Status)
	}
	if r := g.do("GET", "/email/outbox", nil, nil); r.Status != 401 {
		t.Fatalf("outbox without master key: %d", r.Status)
	}
}

func TestEmailPreviewRoute(t *testing.T) {
	g := newGateway(t, "")
	for _, name := range []string{"invitation", "key_created", "key_rotated", "soft_budget", "max_budget"} {
		html := g.admin("GET", "/email/preview/"+name, nil)
		if html.Status != 200 || !strings.Contains(html.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(html.Body), "<table") {
			t.Fatalf("%s html: %d %s", name, html.Status, html.Header)
		}
		if html.Header.Get("X-Email-Subject") == "" || html.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("%s: headers %v", name, html.Header)
		}
		txt := g.admin("GET", "/email/preview/"+name+"?format=text", nil)
		if txt.Status != 200 || strings.Contains(string(txt.Body), "<table") || len(txt.Body) < 50 {
			t.Fatalf("%s text: %d %s", name, txt.Status, txt.Body)
		}
	}
	if r := g.admin("GET", "/email/preview/nope", nil); r.Status != 404 {
		t.Fatalf("unknown template: %d", r.Status)
	}
}

func TestEmailConfigErrorsAreStartupErrors(t *testing.T) {
	g := newGateway(t, "")
	// SMTP selected without a sender address: the config load fails and
	// names the variable.
	cf := strings.Replace(g.caddyfile(), "\t\t\n", "\t\temail smtp {\n\t\t\tsmtp_host 127.0.0.1\n\t\t}\n", 1)
	if err := loadErr(cf); err == nil || !strings.Contains(err.Error(), "SMTP_SENDER_EMAIL") {
		t.Fatalf("missing sender: %v", err)
	}
	cf = strings.Replace(g.caddyfile(), "\t\t\n", "\t\ttemplates {\n\t\t\tsubject_invitation \"Hi {nope}\"\n\t\t}\n", 1)
	if err := loadErr(cf); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown placeholder: %v", err)
	}
	// The running config is untouched by the failed loads.
	if r := g.admin("GET", "/key/list", nil); r.Status != 200 {
		t.Fatalf("gateway after failed reloads: %d", r.Status)
	}
}

// Mail queued while the SMTP server is down survives reloads (one keeping
// the mailer pool, one replacing it) and arrives once when it is back.
func TestQueuedMailSurvivesReload(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Down()
	g := newGateway(t, smtpBlock(srv))
	const n = 8
	for i := 0; i < n; i++ {
		g.mustAdmin("POST", "/user/new", map[string]any{"user_email": fmt.Sprintf("u%d@example.com", i), "send_invite_email": true, "auto_create_key": false})
	}
	g.load() // same settings: the pool is kept
	g.extra = strings.Replace(g.extra, "base_backoff 50ms", "base_backoff 60ms", 1)
	g.load() // new settings: a new pool takes over the outbox, the old one drains
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitFor(n, 20*time.Second)
	if err != nil {
		t.Fatalf("%v (got %d)", err, srv.Count())
	}
	time.Sleep(300 * time.Millisecond)
	if srv.Count() != n {
		t.Fatalf("%d messages, want exactly %d", srv.Count(), n)
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[m.To[0]] {
			t.Fatalf("%s got two invitations", m.To[0])
		}
		seen[m.To[0]] = true
	}
}
