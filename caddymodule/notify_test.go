package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	nethtml "golang.org/x/net/html"

	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/templates"
)

// mailParts is one received email, decoded.
type mailParts struct {
	To      string
	Subject string
	HTML    string
	Text    string
}

// parseMail decodes a raw message as a mail client would: headers with
// RFC 2047 words, a multipart/alternative body with a text/plain and a
// text/html part, each in whatever transfer encoding the mailer chose.
func parseMail(t *testing.T, raw []byte) mailParts {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("not an RFC 5322 message: %v\n%s", err, raw)
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject: %v", err)
	}
	out := mailParts{To: msg.Header.Get("To"), Subject: subject}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q (%v), want multipart/alternative", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading parts: %v", err)
		}
		var body io.Reader = p
		// multipart decodes quoted-printable itself (and drops the header);
		// base64 is ours to decode.
		switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
		case "base64":
			body = base64.NewDecoder(base64.StdEncoding, p)
		case "quoted-printable":
			body = quotedprintable.NewReader(p)
		}
		data, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("reading part: %v", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch pt {
		case "text/html":
			out.HTML = string(data)
		case "text/plain":
			out.Text = string(data)
		default:
			t.Fatalf("unexpected part %q", pt)
		}
	}
	if out.HTML == "" || out.Text == "" {
		t.Fatalf("missing a MIME part: html %d bytes, text %d bytes", len(out.HTML), len(out.Text))
	}
	return out
}

// receive waits for the n-th message (1-based) and returns it decoded.
func receive(t *testing.T, srv *smtptest.Server, n int) (smtptest.Received, mailParts) {
	t.Helper()
	msgs, err := srv.WaitFor(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[n-1]
	return m, parseMail(t, m.Data)
}

// outbox returns every outbox row, newest first, straight from the store
// of the running gateway (the admin route hides bodies and the flag).
func (g *gateway) outbox() []store.OutboxMessage {
	g.t.Helper()
	msgs, err := g.store().ListOutbox(context.Background(), "", 0)
	if err != nil {
		g.t.Fatal(err)
	}
	return msgs
}

// store finds the running gateway's store in the shared-state pool.
func (g *gateway) store() store.Store {
	g.t.Helper()
	var st store.Store
	states.Range(func(k, v any) bool {
		if k.(stateConfig).store == g.dbPath {
			st = v.(*sharedState).store
			return false
		}
		return true
	})
	if st == nil {
		g.t.Fatal("no shared state for the gateway's store")
	}
	return st
}

func warnings(m map[string]any) []string {
	ws, _ := m["warnings"].([]any)
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.(string))
	}
	return out
}

func hasWarning(m map[string]any, substr string) bool {
	for _, w := range warnings(m) {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q", what, sub)
		}
	}
}

func mustNotContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			t.Errorf("%s contains %q", what, sub)
		}
	}
}

func templatesBlock(lines ...string) string {
	return "templates {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}"
}

var invitationLinkRE = regexp.MustCompile(`https://llm\.example\.com/ui\?invitation_id=([0-9a-f]{32})`)

func TestInvitationEmail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv)+"\n\t\t"+templatesBlock("base_url https://llm.example.com/"))

	before := time.Now().UTC()
	out := g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "ada@example.com", "user_id": "ada", "send_invite_email": true})
	if ws := warnings(out); len(ws) != 0 {
		t.Fatalf("warnings: %v", ws)
	}
	plain, _ := out["key"].(string)
	if !strings.HasPrefix(plain, "sk-") {
		t.Fatalf("no auto-created key: %v", out)
	}
	raw, m := receive(t, srv, 1)
	if len(raw.To) != 1 || raw.To[0] != "ada@example.com" || !strings.Contains(m.To, "ada@example.com") {
		t.Fatalf("recipient: envelope %v, header %q", raw.To, m.To)
	}
	if m.Subject != "LiteLLM: New User Invitation" {
		t.Fatalf("subject %q", m.Subject)
	}
	// The link is built from base_url (trailing slash dropped) and carries
	// an id that resolves; the key is not in the invitation.
	hm, tm := invitationLinkRE.FindStringSubmatch(m.HTML), invitationLinkRE.FindStringSubmatch(m.Text)
	if hm == nil || tm == nil || hm[1] != tm[1] {
		t.Fatalf("invitation link: html %v, text %v\n%s", hm, tm, m.Text)
	}
	mustNotContain(t, "invitation html", m.HTML, plain, "0.0.0.0:4000")
	mustNotContain(t, "invitation text", m.Text, plain, "0.0.0.0:4000")

	info := g.mustAdmin("GET", "/invitation/info?invitation_id="+hm[1], nil)
	if info["invitation_id"] != hm[1] || info["user_id"] != "ada" || info["user_email"] != "ada@example.com" || info["expired"] != false || info["accepted_at"] != nil {
		t.Fatalf("invitation info: %v", info)
	}
	created, err1 := time.Parse(time.RFC3339Nano, info["created_at"].(string))
	expires, err2 := time.Parse(time.RFC3339Nano, info["expires_at"].(string))
	if err1 != nil || err2 != nil || created.Before(before.Add(-time.Second)) || expires.Sub(created) != 7*24*time.Hour {
		t.Fatalf("invitation times: %v %v (%v %v)", created, expires, err1, err2)
	}
	// The outbox keeps the body: the invitation holds no secret.
	ob := g.outbox()
	if len(ob) != 1 || ob[0].Kind != "invitation" || ob[0].Sensitive || ob[0].IdempotencyKey != "invitation:"+hm[1] {
		t.Fatalf("outbox: %+v", ob)
	}

	// The route is guarded, validates and 404s unknown ids.
	if r := g.do("GET", "/invitation/info?invitation_id="+hm[1], nil, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("without master key: %d", r.Status)
	}
	if r := g.admin("GET", "/invitation/info", nil); r.Status != http.StatusBadRequest {
		t.Fatalf("missing id: %d %s", r.Status, r.Body)
	}
	r := g.admin("GET", "/invitation/info?invitation_id=0123456789abcdef0123456789abcdef", nil)
	if r.Status != http.StatusNotFound || errorBody(t, r).Type != "not_found_error" {
		t.Fatalf("unknown id: %d %s", r.Status, r.Body)
	}

	// An expired invitation still answers, marked expired.
	past := time.Now().Add(-8 * 24 * time.Hour).UTC()
	if err := g.store().CreateInvitation(context.Background(), &store.Invitation{ID: "old-one", UserID: "ada", CreatedAt: past, ExpiresAt: past.Add(7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if info := g.mustAdmin("GET", "/invitation/info?invitation_id=old-one", nil); info["expired"] != true {
		t.Fatalf("expired invitation: %v", info)
	}
}

// TestInvitationRule walks LiteLLM's three-way send_invite_email rule with
// a real backend configured.
func TestInvitationRule(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv))

	// Absent + backend + email: sent.
	out := g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "bob@example.com"})
	if len(warnings(out)) != 0 {
		t.Fatalf("warnings: %v", out)
	}
	raw, m := receive(t, srv, 1)
	if raw.To[0] != "bob@example.com" || m.Subject != "LiteLLM: New User Invitation" || !strings.Contains(m.Text, "http://0.0.0.0:4000/ui?invitation_id=") {
		t.Fatalf("absent flag: to %v subject %q\n%s", raw.To, m.Subject, m.Text)
	}
	// False: never, and nothing to warn about.
	out = g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "carol@example.com", "send_invite_email": false})
	if len(warnings(out)) != 0 {
		t.Fatalf("false flag warnings: %v", out)
	}
	// Absent without an email: nothing to send to, and the response says so.
	out = g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "no-mail"})
	if !hasWarning(out, "user has no email; no invitation sent") {
		t.Fatalf("absent flag, no email: %v", out)
	}
	// True without an email: the same warning.
	out = g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "no-mail-2", "send_invite_email": true})
	if !hasWarning(out, "user has no email") {
		t.Fatalf("true flag, no email: %v", out)
	}
	// Only the first call queued anything (the outbox is written before the
	// admin call returns, so this is exact, not a timing guess).
	if ob := g.outbox(); len(ob) != 1 {
		t.Fatalf("outbox has %d messages, want 1: %+v", len(ob), ob)
	}
	if n := srv.Count(); n != 1 {
		t.Fatalf("SMTP received %d messages, want 1", n)
	}
}

// TestInvitationRuleLogBackend: with no backend configured an absent flag
// sends nothing; an explicit true is honoured (to the log) with a warning.
func TestInvitationRuleLogBackend(t *testing.T) {
	g := newGateway(t, "email log")
	out := g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "dan@example.com"})
	if len(warnings(out)) != 0 || len(g.outbox()) != 0 {
		t.Fatalf("absent flag with the log backend: %v, outbox %+v", out, g.outbox())
	}
	out = g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "erin@example.com", "send_invite_email": true})
	if !hasWarning(out, "not delivered") {
		t.Fatalf("true flag with the log backend: %v", out)
	}
	if ob := g.outbox(); len(ob) != 1 || ob[0].Kind != "invitation" || ob[0].To[0] != "erin@example.com" {
		t.Fatalf("outbox: %+v", ob)
	}
	// Key rotation with no backend: silent, as in LiteLLM.
	uid := "frank"
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": uid, "user_email": "frank@example.com", "send_invite_email": false, "auto_create_key": false})
	key := g.newKey(map[string]any{"user_id": uid})
	out = g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": key})
	if len(warnings(out)) != 0 || len(g.outbox()) != 1 {
		t.Fatalf("rotation with the log backend: %v, outbox %d", out, len(g.outbox()))
	}
}

func TestKeyCreatedEmail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv)+"\n\t\t"+templatesBlock(
		"base_url https://llm.example.com",
		"company_name Acme",
		`subject_key_created "{company_name} - {event_message}"`,
	))
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "gail", "user_email": "gail@example.com", "send_invite_email": false, "auto_create_key": false})
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "nomail", "send_invite_email": false, "auto_create_key": false})

	out := g.mustAdmin("POST", "/key/generate", map[string]any{"user_id": "gail", "key_alias": "billing-prod", "max_budget": 25, "send_invite_email": true})
	if len(warnings(out)) != 0 {
		t.Fatalf("warnings: %v", out)
	}
	key := out["key"].(string)
	raw, m := receive(t, srv, 1)
	if raw.To[0] != "gail@example.com" || m.Subject != "Acme - API Key Created" {
		t.Fatalf("to %v subject %q", raw.To, m.Subject)
	}
	mustContain(t, "html", m.HTML, key, "billing-prod", "$25.00", "https://llm.example.com")
	mustContain(t, "text", m.Text, key, "billing-prod", "$25.00", "https://llm.example.com/v1")
	mustNotContain(t, "html", m.HTML, templates.HiddenKeyPlaceholder, "0.0.0.0:4000")

	// Without the flag: nothing (LiteLLM sends it only on request).
	g.newKey(map[string]any{"user_id": "gail"})
	out = g.mustAdmin("POST", "/key/generate", map[string]any{"user_id": "gail", "send_invite_email": false})
	if len(warnings(out)) != 0 {
		t.Fatalf("flag false: %v", out)
	}
	// Nobody to send to: the key is made, the response says why.
	out = g.mustAdmin("POST", "/key/generate", map[string]any{"send_invite_email": true})
	if !strings.HasPrefix(out["key"].(string), "sk-") || !hasWarning(out, "key has no user_id") {
		t.Fatalf("key without user: %v", out)
	}
	out = g.mustAdmin("POST", "/key/generate", map[string]any{"user_id": "nomail", "send_invite_email": true})
	if !hasWarning(out, "user nomail has no email") {
		t.Fatalf("user without email: %v", out)
	}

	ob := g.outbox()
	if len(ob) != 1 || ob[0].Kind != "key_created" || !ob[0].Sensitive {
		t.Fatalf("outbox: %+v", ob)
	}
	// Once sent, the plain key is gone from the outbox.
	for deadline := time.Now().Add(5 * time.Second); ob[0].Status != store.StatusSent; ob = g.outbox() {
		if time.Now().After(deadline) {
			t.Fatalf("message not marked sent: %+v", ob[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(ob[0].HTML, key) || strings.Contains(ob[0].Text, key) {
		t.Fatalf("sent sensitive message still holds the key")
	}
	if n := srv.Count(); n != 1 {
		t.Fatalf("SMTP received %d, want 1", n)
	}
}

func TestKeyRotatedEmail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv)+"\n\t\t"+templatesBlock(
		"base_url https://llm.example.com",
		"company_name Acme",
		`subject_key_rotated "Security notice from {company_name}: {event_message}"`,
	))
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "hal", "user_email": "hal@example.com", "send_invite_email": false, "auto_create_key": false})
	old := g.newKey(map[string]any{"user_id": "hal", "key_alias": "ci-runner"})

	out := g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": old})
	if len(warnings(out)) != 0 {
		t.Fatalf("warnings: %v", out)
	}
	newKey := out["key"].(string)
	raw, m := receive(t, srv, 1)
	if raw.To[0] != "hal@example.com" || m.Subject != "Security notice from Acme: API Key Rotated" {
		t.Fatalf("to %v subject %q", raw.To, m.Subject)
	}
	mustContain(t, "html", m.HTML, newKey, "ci-runner", "https://llm.example.com")
	mustContain(t, "text", m.Text, newKey, "ci-runner", "old key stopped working", "UPDATE YOUR APPLICATIONS", "KEEP YOUR KEY SAFE")
	mustNotContain(t, "html", m.HTML, old)
	mustNotContain(t, "text", m.Text, old)

	// The path form rotates again: one more email, with the newest key.
	out = g.mustAdmin("POST", "/key/"+newKey+"/regenerate", nil)
	newest := out["key"].(string)
	_, m = receive(t, srv, 2)
	mustContain(t, "text", m.Text, newest)
	mustNotContain(t, "text", m.Text, newKey)

	// A key without a user: rotated, no email, a warning.
	orphan := g.newKey(nil)
	out = g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": orphan})
	if !strings.HasPrefix(out["key"].(string), "sk-") || !hasWarning(out, "key has no user_id; no key-rotated email sent") {
		t.Fatalf("orphan key: %v", out)
	}
	ob := g.outbox()
	if len(ob) != 2 || ob[0].Kind != "key_rotated" || !ob[0].Sensitive || ob[0].IdempotencyKey == ob[1].IdempotencyKey {
		t.Fatalf("outbox: %+v", ob)
	}
}

// TestKeyEmailsHideKey: include_api_key false puts LiteLLM's placeholder in
// place of the key, and the message is no longer sensitive.
func TestKeyEmailsHideKey(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv)+"\n\t\t"+templatesBlock("include_api_key false"))
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "ivy", "user_email": "ivy@example.com", "send_invite_email": false, "auto_create_key": false})
	out := g.mustAdmin("POST", "/key/generate", map[string]any{"user_id": "ivy", "send_invite_email": true})
	created := out["key"].(string)
	_, m := receive(t, srv, 1)
	if m.Subject != "LiteLLM: API Key Created" {
		t.Fatalf("subject %q", m.Subject)
	}
	mustContain(t, "created html", m.HTML, templates.HiddenKeyPlaceholder)
	mustContain(t, "created text", m.Text, templates.HiddenKeyPlaceholder)
	mustNotContain(t, "created html", m.HTML, created)
	mustNotContain(t, "created text", m.Text, created)

	out = g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": created})
	rotated := out["key"].(string)
	_, m = receive(t, srv, 2)
	if m.Subject != "LiteLLM: API Key Rotated" {
		t.Fatalf("subject %q", m.Subject)
	}
	mustContain(t, "rotated text", m.Text, templates.HiddenKeyPlaceholder)
	mustNotContain(t, "rotated html", m.HTML, rotated, created)
	mustNotContain(t, "rotated text", m.Text, rotated, created)
	for _, o := range g.outbox() {
		if o.Sensitive {
			t.Fatalf("%s marked sensitive without a key in it", o.Kind)
		}
	}
}

// TestLifecycleEmailEscaping: user-supplied values cannot inject markup.
func TestLifecycleEmailEscaping(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv))
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "jo", "user_email": "jo@example.com", "send_invite_email": false, "auto_create_key": false})
	alias := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	g.mustAdmin("POST", "/key/generate", map[string]any{"user_id": "jo", "key_alias": alias, "send_invite_email": true})
	_, m := receive(t, srv, 1)
	mustNotContain(t, "html", m.HTML, "<script", "<img src=x")
	mustContain(t, "html", m.HTML, "&lt;script&gt;")
	assertNoActiveContent(t, m.HTML)
	// Plain text has nothing to escape: the alias is shown as typed.
	mustContain(t, "text", m.Text, alias)

	// An email address with markup never becomes a user (nor a recipient).
	r := g.admin("POST", "/user/new", map[string]any{"user_email": "<script>@example.com", "send_invite_email": true})
	if r.Status != http.StatusBadRequest {
		t.Fatalf("markup in user_email: %d %s", r.Status, r.Body)
	}
	if n := len(g.outbox()); n != 1 {
		t.Fatalf("outbox has %d messages, want 1", n)
	}
}

// assertNoActiveContent parses html like a mail client and fails on any
// script, event handler attribute or javascript: URL.
func assertNoActiveContent(t *testing.T, doc string) {
	t.Helper()
	z := nethtml.NewTokenizer(strings.NewReader(doc))
	for {
		switch z.Next() {
		case nethtml.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatalf("parsing html: %v", z.Err())
			}
			return
		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			tok := z.Token()
			if tok.Data == "script" || tok.Data == "iframe" || tok.Data == "object" {
				t.Errorf("active element <%s>", tok.Data)
			}
			for _, a := range tok.Attr {
				v := strings.ToLower(strings.TrimSpace(a.Val))
				if strings.HasPrefix(a.Key, "on") {
					t.Errorf("event handler %s=%q on <%s>", a.Key, a.Val, tok.Data)
				}
				if (a.Key == "href" || a.Key == "src") && strings.HasPrefix(v, "javascript:") {
					t.Errorf("%s=%q on <%s>", a.Key, a.Val, tok.Data)
				}
				if tok.Data == "img" && a.Key == "src" && v == "x" {
					t.Errorf("injected <img src=x>")
				}
			}
		}
	}
}

// TestLifecycleEmailSignatureSanitised: a signature keeps its allowed
// formatting and loses images, handlers and javascript: links.
func TestLifecycleEmailSignatureSanitised(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	sig := "`<p>Thanks, <b>the Ops team</b></p><img src=x onerror=\"alert(1)\"><a href=\"javascript:alert(2)\">click me</a> <a href=\"https://status.example.com\">status</a>`"
	g := newGateway(t, smtpBlock(srv)+"\n\t\t"+templatesBlock("signature "+sig))
	g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "kim@example.com", "send_invite_email": true})
	_, m := receive(t, srv, 1)
	assertNoActiveContent(t, m.HTML)
	mustContain(t, "html", m.HTML, "<b>the Ops team</b>", `href="https://status.example.com"`, "click me")
	mustNotContain(t, "html", m.HTML, "javascript:alert", "<img src=x")
	mustContain(t, "text", m.Text, "Thanks, the Ops team")
}

// TestSubjectCRLFRefusedAtStartup: a subject override that would add a
// header is a config error, not a sent email.
func TestSubjectCRLFRefusedAtStartup(t *testing.T) {
	g := newGateway(t, "")
	t.Setenv("LLMSPEND_TEST_SUBJECT", "Hello\r\nBcc: evil@example.com")
	for _, block := range []string{
		templatesBlock("subject_invitation {env.LLMSPEND_TEST_SUBJECT}"),
		templatesBlock("subject_key_rotated \"Rotated\nBcc: evil@example.com\""),
	} {
		cf := strings.Replace(g.caddyfile(), "\t\t\n", "\t\t"+block+"\n", 1)
		err := loadErr(cf)
		if err == nil || !strings.Contains(err.Error(), "CR") || !strings.Contains(err.Error(), "EMAIL_SUBJECT_") {
			t.Fatalf("CR/LF subject accepted: %v\n%s", err, block)
		}
		t.Logf("refused: %v", err)
	}
	if r := g.admin("GET", "/key/list", nil); r.Status != http.StatusOK {
		t.Fatalf("gateway after failed reloads: %d", r.Status)
	}
}

// TestLifecycleEmailSMTPDown: the admin calls succeed while the mail server
// is down, and the mail goes out once it is back.
func TestLifecycleEmailSMTPDown(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv))
	srv.Down()
	out := g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "lee", "user_email": "lee@example.com", "send_invite_email": true})
	if len(warnings(out)) != 0 {
		t.Fatalf("warnings while SMTP is down: %v", out)
	}
	out = g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": out["key"]})
	if len(warnings(out)) != 0 {
		t.Fatalf("warnings while SMTP is down: %v", out)
	}
	time.Sleep(300 * time.Millisecond)
	if n := srv.Count(); n != 0 {
		t.Fatalf("%d messages while down", n)
	}
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitFor(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[string]bool{}
	for _, raw := range msgs {
		m := parseMail(t, raw.Data)
		if raw.To[0] != "lee@example.com" {
			t.Fatalf("recipient %v", raw.To)
		}
		subjects[m.Subject] = true
	}
	if !subjects["LiteLLM: New User Invitation"] || !subjects["LiteLLM: API Key Rotated"] {
		t.Fatalf("subjects %v", subjects)
	}
	for _, o := range g.outbox() {
		if o.Attempts < 2 {
			t.Errorf("%s delivered in %d attempts: the server was not really down", o.Kind, o.Attempts)
		}
	}
}

// dateRE matches the instants the sample data derives from the clock.
var dateRE = regexp.MustCompile(`(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} at \d{2}:\d{2} UTC`)

func normaliseDates(s string) string { return dateRE.ReplaceAllString(s, "<date>") }

// TestEmailPreviewRouteMatchesGolden: the preview route serves exactly the
// reviewed golden files of the templates package (dates aside: the golden
// files use a fixed clock, the route the real one).
func TestEmailPreviewRouteMatchesGolden(t *testing.T) {
	g := newGateway(t, "")
	golden := filepath.Join("..", "templates", "testdata", "golden")
	r, err := templates.New(templates.SettingsFromEnv(func(string) string { return "" }))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range r.Names() {
		wantHTML, err := os.ReadFile(filepath.Join(golden, name+".html"))
		if err != nil {
			t.Fatal(err)
		}
		wantText, err := os.ReadFile(filepath.Join(golden, name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		html := g.admin("GET", "/email/preview/"+name, nil)
		text := g.admin("GET", "/email/preview/"+name+"?format=text", nil)
		if html.Status != 200 || text.Status != 200 {
			t.Fatalf("%s: %d %d", name, html.Status, text.Status)
		}
		if got, want := normaliseDates(string(html.Body)), normaliseDates(string(wantHTML)); got != want {
			t.Errorf("%s.html: route differs from golden:\n%s", name, firstDiff(got, want))
		}
		gotText := "Subject: " + text.Header.Get("X-Email-Subject") + "\n\n" + string(text.Body)
		if got, want := normaliseDates(gotText), normaliseDates(string(wantText)); got != want {
			t.Errorf("%s.txt: route differs from golden:\n%s", name, firstDiff(got, want))
		}
	}
}

func firstDiff(got, want string) string {
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			return "line " + strconv.Itoa(i+1) + ":\n got: " + g + "\nwant: " + w
		}
	}
	return "(no line differs)"
}
