package caddymodule

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// sharedStore returns the running gateway's store (tests only).
func sharedStore(t *testing.T) store.Store {
	t.Helper()
	var st store.Store
	states.Range(func(_, v any) bool {
		if s, ok := v.(*sharedState); ok {
			st = s.store
		}
		return st == nil
	})
	if st == nil {
		t.Fatal("no shared state")
	}
	return st
}

// uiSignIn posts the master key and returns the session cookie.
func uiSignIn(t *testing.T, g *gateway) *http.Cookie {
	t.Helper()
	r := g.form("/ui/login", url.Values{"master_key": {testMasterKey}}, nil)
	if r.Status != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %s", r.Status, r.Body)
	}
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == uiCookieName && c.Value != "" {
			return c
		}
	}
	t.Fatalf("sign-in set no session cookie: %v", r.Header)
	return nil
}

// form posts a URL-encoded form without following redirects.
func (g *gateway) form(path string, v url.Values, headers map[string]string) resp {
	g.t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, x := range headers {
		h[k] = x
	}
	return g.raw("POST", path, h, v.Encode())
}

// raw sends a request without following redirects; headers may carry a Cookie.
func (g *gateway) raw(method, path string, headers map[string]string, body string) resp {
	g.t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: []byte(b.String())}
}

func cookieHdr(c *http.Cookie, extra map[string]string) map[string]string {
	h := map[string]string{"Cookie": c.Name + "=" + c.Value}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// uiCSRF fetches a page with the session and returns its CSRF token.
func uiCSRF(t *testing.T, g *gateway, c *http.Cookie) string {
	t.Helper()
	r := g.raw("GET", "/ui/keys", cookieHdr(c, nil), "")
	m := csrfMeta.FindSubmatch(r.Body)
	if r.Status != 200 || m == nil {
		t.Fatalf("keys page: %d, csrf meta %v", r.Status, m != nil)
	}
	return string(m[1])
}

func TestUINothingReachableWithoutSession(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "secret-alias"})
	out := g.mustAdmin("GET", "/key/info?key="+key, nil)
	token := out["info"].(map[string]any)["token"].(string)
	st := sharedStore(t)
	k, err := st.GetKeyByToken(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}

	pages := []string{"/ui/keys", "/ui/users", "/ui/email", "/ui/keys/" + k.ID, "/ui/keys?user_id=x"}
	bad := map[string]string{
		"none":            "",
		"garbage":         uiCookieName + "=garbage",
		"forged":          uiCookieName + "=" + forgeCookie(uiSigningKey("another-master-key"), time.Now()),
		"expired":         uiCookieName + "=" + forgeCookie(uiSigningKey(testMasterKey), time.Now().Add(-uiSessionTTL-time.Minute)),
		"tampered expiry": uiCookieName + "=" + tamper(forgeCookie(uiSigningKey(testMasterKey), time.Now())),
	}
	for name, cookie := range bad {
		h := map[string]string{}
		if cookie != "" {
			h["Cookie"] = cookie
		}
		for _, p := range pages {
			r := g.raw("GET", p, h, "")
			if r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/ui?next=") {
				t.Errorf("%s cookie: GET %s: %d %s", name, p, r.Status, r.Header.Get("Location"))
			}
			if strings.Contains(string(r.Body), "secret-alias") {
				t.Errorf("%s cookie: GET %s leaked page content", name, p)
			}
		}
		for _, api := range []struct{ method, path, body string }{
			{"GET", "/key/list", ""},
			{"GET", "/spend/daily?key=" + token, ""},
			{"GET", "/email/outbox", ""},
			{"GET", "/email/preview/invitation", ""},
			{"POST", "/key/generate", "{}"},
			{"POST", "/user/new", `{"user_email":"a@example.com"}`},
		} {
			if r := g.raw(api.method, api.path, h, api.body); r.Status != http.StatusUnauthorized {
				t.Errorf("%s cookie: %s %s: %d", name, api.method, api.path, r.Status)
			}
		}
	}
	// The sign-in page itself is public and carries the security headers.
	r := g.raw("GET", "/ui", nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Body), `name="master_key"`) {
		t.Fatalf("sign-in page: %d", r.Status)
	}
	assertUIHeaders(t, r)
	// Signed-in pages never come from a guessable place: /ui/ redirects, unknown paths are a friendly 404.
	if r := g.raw("GET", "/ui/nope", nil, ""); r.Status != 404 || !strings.Contains(string(r.Body), "Page not found") {
		t.Fatalf("unknown ui path: %d", r.Status)
	}
}

func forgeCookie(key []byte, now time.Time) string {
	v, _ := newSessionCookie(key, now)
	return v
}

// tamper changes the expiry part of a cookie and keeps the signature.
func tamper(v string) string {
	parts := strings.Split(v, ".")
	parts[1] = b64([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	return strings.Join(parts, ".")
}

func assertUIHeaders(t *testing.T, r resp) {
	t.Helper()
	csp := r.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "http") {
		t.Errorf("CSP too loose: %q", csp)
	}
	if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("Referrer-Policy") == "" || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", r.Header)
	}
}

func TestUISignInCookieFlags(t *testing.T) {
	g := newGateway(t, "")
	r := g.form("/ui/login", url.Values{"master_key": {"wrong-key-123"}, "next": {"/ui/email"}}, nil)
	if r.Status != http.StatusUnauthorized || len(r.Header.Values("Set-Cookie")) != 0 || !strings.Contains(string(r.Body), "not the master key") {
		t.Fatalf("wrong key: %d %v", r.Status, r.Header.Values("Set-Cookie"))
	}
	if !strings.Contains(string(r.Body), `name="next" value="/ui/email"`) {
		t.Fatal("a failed sign-in forgets where the user was going")
	}
	r = g.form("/ui/login", url.Values{"master_key": {testMasterKey}, "next": {"/ui/email"}}, nil)
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/ui/email" {
		t.Fatalf("sign-in: %d %s", r.Status, r.Header.Get("Location"))
	}
	set := r.Header.Get("Set-Cookie")
	for _, want := range []string{uiCookieName + "=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(set, "Secure") {
		t.Errorf("Secure on plain http would make the browser drop the cookie: %q", set)
	}
	// An open redirect is not possible through next.
	r = g.form("/ui/login", url.Values{"master_key": {testMasterKey}, "next": {"//evil.example/ui/x"}}, nil)
	if r.Header.Get("Location") != "/ui/keys" {
		t.Fatalf("next=//evil: %s", r.Header.Get("Location"))
	}
	// A cross-site login post is refused.
	r = g.form("/ui/login", url.Values{"master_key": {testMasterKey}}, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if r.Status != http.StatusForbidden || len(r.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("cross-site sign-in: %d", r.Status)
	}

	// Over TLS the cookie is Secure.
	h := &AdminHandler{}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "https://gw.example/ui/login", nil)
	req.TLS = &tls.ConnectionState{}
	h.setSessionCookie(rec, req, "v", 60)
	if c := rec.Header().Get("Set-Cookie"); !strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") {
		t.Fatalf("TLS cookie: %q", c)
	}
}

func TestUICSRFRequiredForChanges(t *testing.T) {
	g := newGateway(t, "")
	c := uiSignIn(t, g)
	tok := uiCSRF(t, g, c)
	json := map[string]string{"Content-Type": "application/json"}

	// Reads need only the session.
	if r := g.raw("GET", "/key/list", cookieHdr(c, nil), ""); r.Status != 200 {
		t.Fatalf("GET with session: %d %s", r.Status, r.Body)
	}
	// Changes need the token, from this site.
	for name, h := range map[string]map[string]string{
		"no token":    cookieHdr(c, json),
		"wrong token": cookieHdr(c, map[string]string{"Content-Type": "application/json", uiCSRFHeader: tok[:len(tok)-2] + "xx"}),
		"cross-site":  cookieHdr(c, map[string]string{"Content-Type": "application/json", uiCSRFHeader: tok, "Sec-Fetch-Site": "cross-site"}),
		"other origin": cookieHdr(c, map[string]string{"Content-Type": "application/json", uiCSRFHeader: tok,
			"Origin": "https://evil.example"}),
	} {
		if r := g.raw("POST", "/key/generate", h, `{"key_alias":"x"}`); r.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	if r := g.mustAdmin("GET", "/key/list", nil); r["total_count"].(float64) != 0 {
		t.Fatalf("a refused call created a key: %v", r)
	}
	r := g.raw("POST", "/key/generate", cookieHdr(c, map[string]string{"Content-Type": "application/json", uiCSRFHeader: tok, "Sec-Fetch-Site": "same-origin"}), `{"key_alias":"from-ui"}`)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"key":"sk-`) {
		t.Fatalf("with token: %d %s", r.Status, r.Body)
	}
	// A token is bound to its session.
	c2 := uiSignIn(t, g)
	if tok2 := uiCSRF(t, g, c2); tok2 == tok {
		t.Fatal("two sessions share a CSRF token")
	}
	if r := g.raw("POST", "/key/generate", cookieHdr(c2, map[string]string{uiCSRFHeader: tok}), `{}`); r.Status != http.StatusUnauthorized {
		t.Fatalf("token of another session: %d", r.Status)
	}

	// Sign-out needs the token too, then the cookie is dead even if replayed.
	if r := g.form("/ui/logout", url.Values{}, cookieHdr(c, nil)); r.Status != http.StatusForbidden {
		t.Fatalf("logout without token: %d", r.Status)
	}
	r = g.form("/ui/logout", url.Values{"csrf": {tok}}, cookieHdr(c, nil))
	if r.Status != http.StatusSeeOther || !strings.Contains(r.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d %v", r.Status, r.Header)
	}
	if r := g.raw("GET", "/ui/keys", cookieHdr(c, nil), ""); r.Status != http.StatusSeeOther {
		t.Fatalf("replayed cookie after sign-out: %d", r.Status)
	}
	if r := g.raw("GET", "/key/list", cookieHdr(c, nil), ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("replayed cookie on the API after sign-out: %d", r.Status)
	}
	// The other session lives on.
	if r := g.raw("GET", "/ui/keys", cookieHdr(c2, nil), ""); r.Status != 200 {
		t.Fatalf("other session after sign-out: %d", r.Status)
	}
}

func TestUIEscapesUserInput(t *testing.T) {
	g := newGateway(t, "")
	g.mustAdmin("POST", "/user/new", map[string]any{
		"user_id": "<b>bob</b>", "user_email": "bob@example.com", "user_alias": "<img src=x onerror=alert(1)>",
		"auto_create_key": false, "send_invite_email": false,
	})
	key := g.newKey(map[string]any{"key_alias": `<script>alert("k")</script>`, "user_id": "<b>bob</b>"})
	// A model name is client-chosen: it reaches the chart's legend and tooltips.
	if r := g.chat(key, `<svg onload=alert(2)>`); r.Status != 200 {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	c := uiSignIn(t, g)
	st := sharedStore(t)
	keys, _ := st.ListKeys(context.Background(), "")
	for _, p := range []string{"/ui/users", "/ui/keys", "/ui/keys/" + keys[0].ID, "/ui/keys?user_id=" + url.QueryEscape("<b>bob</b>")} {
		r := g.raw("GET", p, cookieHdr(c, nil), "")
		body := string(r.Body)
		if r.Status != 200 {
			t.Fatalf("%s: %d", p, r.Status)
		}
		assertUIHeaders(t, r)
		for _, raw := range []string{"<script>alert", "<b>bob</b>", "<img src=x", "<svg onload"} {
			if strings.Contains(body, raw) {
				t.Errorf("%s: unescaped %q", p, raw)
			}
		}
		if !strings.Contains(body, "&lt;b&gt;bob&lt;/b&gt;") && !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("%s: escaped value not shown", p)
		}
	}
	r := g.raw("GET", "/ui/keys/"+keys[0].ID, cookieHdr(c, nil), "")
	if !strings.Contains(string(r.Body), "&lt;svg onload=alert(2)&gt;") {
		t.Errorf("model name not in the chart legend, escaped")
	}
}

func TestUIInvitationLanding(t *testing.T) {
	g := newGateway(t, "")
	g.mustAdmin("POST", "/user/new", map[string]any{
		"user_id": "ada", "user_email": "ada@example.com", "max_budget": 25, "auto_create_key": false, "send_invite_email": false,
	})
	st := sharedStore(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, inv := range []store.Invitation{
		{ID: "inv-ok", UserID: "ada", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)},
		{ID: "inv-old", UserID: "ada", CreatedAt: now.Add(-48 * time.Hour), ExpiresAt: now.Add(-time.Hour)},
	} {
		if err := st.CreateInvitation(ctx, &inv); err != nil {
			t.Fatal(err)
		}
	}
	get := func(id string) resp { return g.raw("GET", "/ui?invitation_id="+url.QueryEscape(id), nil, "") }

	if r := get("nope"); r.Status != 404 || !strings.Contains(string(r.Body), "not valid") {
		t.Fatalf("unknown: %d %s", r.Status, r.Body)
	}
	if r := get("inv-old"); r.Status != http.StatusGone || !strings.Contains(string(r.Body), "expired") {
		t.Fatalf("expired: %d", r.Status)
	}
	r := get("inv-ok")
	body := string(r.Body)
	if r.Status != 200 || !strings.Contains(body, "ada@example.com") || !strings.Contains(body, "$25.00") {
		t.Fatalf("welcome: %d %s", r.Status, body)
	}
	assertUIHeaders(t, r)
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if tok == nil {
		t.Fatal("no form token")
	}
	// The token is bound to the invitation: it does not accept another one, and is required.
	if r := g.form("/ui/invitation", url.Values{"invitation_id": {"inv-ok"}}, nil); r.Status != http.StatusForbidden {
		t.Fatalf("no token: %d", r.Status)
	}
	if r := g.form("/ui/invitation", url.Values{"invitation_id": {"inv-old"}, "csrf": {tok[1]}}, nil); r.Status != http.StatusForbidden {
		t.Fatalf("token of another invitation: %d", r.Status)
	}
	if r := g.form("/ui/invitation", url.Values{"invitation_id": {"inv-ok"}, "csrf": {tok[1]}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); r.Status != http.StatusForbidden {
		t.Fatalf("cross-site accept: %d", r.Status)
	}
	r = g.form("/ui/invitation", url.Values{"invitation_id": {"inv-ok"}, "csrf": {tok[1]}}, nil)
	key := regexp.MustCompile(`<code id="invite-key">(sk-[A-Za-z0-9_-]+)</code>`).FindStringSubmatch(string(r.Body))
	if r.Status != 200 || key == nil {
		t.Fatalf("accept: %d %s", r.Status, r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("a page with a key may be cached")
	}
	// The key is the user's and works at the gateway.
	if c := g.chat(key[1], "gpt-4o-mini"); c.Status != 200 {
		t.Fatalf("invited key at the gateway: %d %s", c.Status, c.Body)
	}
	info := g.mustAdmin("GET", "/key/info?key="+key[1], nil)
	if info["info"].(map[string]any)["user_id"] != "ada" {
		t.Fatalf("key owner: %v", info)
	}
	// Used: both a second post and the link say so, without creating a key.
	if r := g.form("/ui/invitation", url.Values{"invitation_id": {"inv-ok"}, "csrf": {tok[1]}}, nil); r.Status != http.StatusGone || !strings.Contains(string(r.Body), "already been used") {
		t.Fatalf("second accept: %d", r.Status)
	}
	if r := get("inv-ok"); r.Status != http.StatusGone || !strings.Contains(string(r.Body), "already been used") {
		t.Fatalf("used link: %d", r.Status)
	}
	keys, _ := st.ListKeys(ctx, "ada")
	if len(keys) != 1 {
		t.Fatalf("ada has %d keys, want 1", len(keys))
	}
}

func TestSpendDailyRoute(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "daily"})
	for range 3 {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("chat: %d", r.Status)
		}
	}
	if r := g.chat(key, "gpt-4o"); r.Status != 200 {
		t.Fatalf("chat: %d", r.Status)
	}
	out := g.mustAdmin("GET", "/spend/daily?key="+key, nil)
	rows := out["daily"].([]any)
	if len(rows) != 2 || out["days"].(float64) != 30 || out["total_spend"].(float64) <= 0 {
		t.Fatalf("daily: %v", out)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	var reqs float64
	for _, x := range rows {
		row := x.(map[string]any)
		if row["date"] != today || row["spend"].(float64) <= 0 {
			t.Fatalf("row %v", row)
		}
		reqs += row["requests"].(float64)
	}
	if reqs != 4 {
		t.Fatalf("requests %v, want 4", reqs)
	}
	token := out["token"].(string)
	if r := g.mustAdmin("GET", "/spend/daily?days=7&key="+token, nil); len(r["daily"].([]any)) != 2 || r["days"].(float64) != 7 {
		t.Fatalf("by token: %v", r)
	}
	for _, q := range []string{"days=0&key=" + token, "days=x&key=" + token, "days=400&key=" + token, ""} {
		if r := g.admin("GET", "/spend/daily?"+q, nil); r.Status != 400 {
			t.Errorf("%s: %d", q, r.Status)
		}
	}
	if r := g.admin("GET", "/spend/daily?key=sk-unknown-key-000000000", nil); r.Status != 404 {
		t.Fatalf("unknown key: %d", r.Status)
	}
}

func TestUIPagesRender(t *testing.T) {
	g := newGateway(t, "")
	c := uiSignIn(t, g)
	// Empty states first.
	for p, want := range map[string]string{"/ui/keys": "No keys yet", "/ui/users": "No users yet", "/ui/email": "No email has been sent yet"} {
		r := g.raw("GET", p, cookieHdr(c, nil), "")
		if r.Status != 200 || !strings.Contains(string(r.Body), want) {
			t.Fatalf("%s: %d, want %q", p, r.Status, want)
		}
	}
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "u1", "user_email": "u1@example.com", "max_budget": 10, "auto_create_key": false})
	key := g.newKey(map[string]any{"key_alias": "svc", "user_id": "u1", "max_budget": 0.001, "budget_duration": "30d"})
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("chat: %d", r.Status)
	}
	k, _ := sharedStore(t).GetKeyByToken(context.Background(), tokenHex(hashKey(key)))
	r := g.raw("GET", "/ui/keys/"+k.ID, cookieHdr(c, nil), "")
	body := string(r.Body)
	if r.Status != 200 || !strings.Contains(body, `class="seg"`) || !strings.Contains(body, "gpt-4o-mini") || !strings.Contains(body, "u1@example.com") || !strings.Contains(body, "Today") {
		t.Fatalf("key page: %d %s", r.Status, body)
	}
	if r := g.raw("GET", "/ui/keys/nope", cookieHdr(c, nil), ""); r.Status != 404 || !strings.Contains(string(r.Body), "Key not found") {
		t.Fatalf("unknown key page: %d", r.Status)
	}
	r = g.raw("GET", "/ui/users", cookieHdr(c, nil), "")
	if !strings.Contains(string(r.Body), "u1@example.com") || !strings.Contains(string(r.Body), `href="/ui/keys?user_id=u1">1</a>`) {
		t.Fatalf("users page: %s", r.Body)
	}
	r = g.raw("GET", "/ui/email", cookieHdr(c, nil), "")
	for _, name := range []string{"invitation", "key_created", "key_rotated", "soft_budget", "max_budget"} {
		if !strings.Contains(string(r.Body), `<iframe src="/email/preview/`+name+`" sandbox`) {
			t.Fatalf("email page lacks the %s preview", name)
		}
	}
	// The previews load with the session (iframes send the cookie).
	if r := g.raw("GET", "/email/preview/invitation", cookieHdr(c, nil), ""); r.Status != 200 {
		t.Fatalf("preview with session: %d", r.Status)
	}
	// Signed in, /ui goes to the keys.
	if r := g.raw("GET", "/ui", cookieHdr(c, nil), ""); r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/ui/keys" {
		t.Fatalf("/ui signed in: %d %s", r.Status, r.Header.Get("Location"))
	}
	for _, a := range []struct{ path, ctype string }{{"/ui/assets/app.css", "text/css"}, {"/ui/assets/app.js", "text/javascript"}} {
		r := g.raw("GET", a.path, nil, "")
		if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), a.ctype) || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: %d %v", a.path, r.Status, r.Header)
		}
	}
	if r := g.raw("GET", "/ui/assets/layout.html", nil, ""); r.Status != 404 {
		t.Fatalf("templates are not assets: %d", r.Status)
	}
}

func TestUIDisabledWithoutMasterKey(t *testing.T) {
	g := newGateway(t, "")
	cf := strings.Replace(g.caddyfile(), "master_key "+testMasterKey, "master_key \"\"", 1)
	g.loadText(cf)
	r := g.raw("GET", "/ui", nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Body), "no master key is set") {
		t.Fatalf("sign-in page without master key: %d %s", r.Status, r.Body)
	}
	if r := g.form("/ui/login", url.Values{"master_key": {""}}, nil); r.Status != http.StatusUnauthorized || len(r.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("sign-in without master key: %d", r.Status)
	}
}

func TestBuildChart(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	rows := []store.DailySpend{
		{KeyID: "k", Model: "a", Day: "2026-12-04", Spend: 3_000_000_000_000, Requests: 3},
		{KeyID: "k", Model: "b", Day: "2026-12-04", Spend: 1_000_000_000_000, Requests: 1},
		{KeyID: "k", Model: "a", Day: "2026-11-20", Spend: 2_000_000_000_000, Requests: 2},
		{KeyID: "k", Model: "a", Day: "2026-10-01", Spend: 9_000_000_000_000, Requests: 9}, // outside the window
	}
	c := buildChart(rows, 30, now)
	if len(c.Bars) != 3 || c.Empty || len(c.Legend) != 2 || c.Legend[0].Model != "a" {
		t.Fatalf("chart: %+v", c)
	}
	// Today's stack is 4 USD high and the axis tops at the next nice number (5).
	if c.YTicks[4].Label != "$5.00" {
		t.Fatalf("top tick %q", c.YTicks[4].Label)
	}
	a, b := c.Bars[1], c.Bars[2]
	if a.Fill != chartPalette[0] || b.Fill != chartPalette[1] || a.Y+a.H != c.Bottom || b.Y+b.H != a.Y {
		t.Fatalf("stacking: %+v %+v bottom %v", a, b, c.Bottom)
	}
	if got := c.XTicks[len(c.XTicks)-1].Label; got != "Dec 4" {
		t.Fatalf("last x label %q", got)
	}
	if e := buildChart(nil, 30, now); !e.Empty || len(e.Bars) != 0 {
		t.Fatalf("empty chart: %+v", e)
	}
	for in, want := range map[float64]float64{0: 1, 0.0003: 0.0005, 4: 5, 7: 10, 20: 20, 21: 25, 0.09: 0.1} {
		if got := niceCeil(in); got < want*0.999999 || got > want*1.000001 {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParseSessionCookie(f *testing.F) {
	// Deterministic: fuzz workers rebuild it and must agree on "good".
	key := uiSigningKey("fuzz-master-key")
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	good, _ := signSession(key, "00112233445566778899aabbccddeeff", now.Add(time.Hour))
	f.Add(good)
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, v string) {
		s, ok := parseSessionCookie(key, v, now)
		if ok && v != good {
			t.Fatalf("accepted a cookie that was never issued: %q (%+v)", v, s)
		}
	})
}

func TestUIFormatting(t *testing.T) {
	for in, want := range map[string]string{"1mo": "month", "30d": "30 days", "1d": "day", "7d": "7 days", "1h": "hour", "30s": "30 seconds", "30m": "30 minutes", "odd": "odd"} {
		if got := humanPeriod(in); got != want {
			t.Errorf("humanPeriod(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{14.4993: "$14.50", 0.000706: "$0.000706", 0: "$0.00", 1: "$1.00", 0.5: "$0.50"} {
		if got := uiDollars(money.FromUSD(in)); got != want {
			t.Errorf("uiDollars(%v) = %q, want %q", in, got, want)
		}
	}
	max := money.FromUSD(10)
	for spent, want := range map[float64]bar{
		0:  {Pct: 0, Level: "ok", Label: "0% of $10.00"},
		8:  {Pct: 80, Level: "warn", Label: "80% of $10.00"},
		12: {Pct: 100, Level: "over", Label: "120% of $10.00"},
	} {
		if got := budgetBar(money.FromUSD(spent), &max); got != want {
			t.Errorf("budgetBar(%v) = %+v, want %+v", spent, got, want)
		}
	}
	if b := budgetBar(5, nil); b.Level != "none" {
		t.Errorf("no budget: %+v", b)
	}
	sent := store.OutboxMessage{Status: store.StatusSent}
	failed := store.OutboxMessage{Status: store.StatusFailed, LastError: "550 no"}
	retrying := store.OutboxMessage{Status: store.StatusPending, Attempts: 2, LastError: "421 busy"}
	for _, c := range []struct {
		cfg  bool
		msgs []store.OutboxMessage
		want string
	}{
		{false, nil, "idle"},
		{true, nil, "ok"},
		{true, []store.OutboxMessage{sent, failed}, "ok"},
		{true, []store.OutboxMessage{failed, sent}, "bad"},
		{true, []store.OutboxMessage{sent, retrying}, "warn"},
	} {
		if got := emailHealth(c.cfg, "smtp", c.msgs); got.Level != c.want {
			t.Errorf("emailHealth(%v, %v) = %+v, want %s", c.cfg, c.msgs, got, c.want)
		}
	}
}

// Every admin call from the UI verifies the session: two HMACs.
func BenchmarkParseSessionCookie(b *testing.B) {
	key := uiSigningKey("bench-master-key")
	now := time.Now()
	v, _ := newSessionCookie(key, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseSessionCookie(key, v, now); !ok {
			b.Fatal("refused")
		}
	}
}
