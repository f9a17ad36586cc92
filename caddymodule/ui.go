package caddymodule

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Web UI (issue 9): server-rendered pages under /ui on the admin API's
// site. The browser never holds the master key: signing in trades it for a
// signed session cookie, and the pages' script calls the same JSON admin
// routes as scripts do, with the session cookie and a CSRF token instead of
// the key (see guard in admin.go).

//go:embed uiassets
var uiAssets embed.FS

const (
	uiCookieName = "llmspend_session"
	uiSessionTTL = 12 * time.Hour
	uiCSRFHeader = "X-CSRF-Token"
	uiCSRFField  = "csrf"

	// uiCSP allows nothing but our own embedded files: no inline script or
	// style (bars and charts are SVG attributes, not style attributes), no
	// framing of our pages. Frames of our own origin are allowed for the
	// email previews, which carry their own, stricter policy.
	uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

// The session signing key is derived from the master key, so every gateway
// instance that shares the master key accepts the same sessions (several
// instances behind a load balancer act as one gateway), sessions survive a
// restart, and changing the master key signs everybody out. PBKDF2 makes an
// offline guess at a weak master key from a stolen cookie expensive.
const (
	uiKDFIterations = 300_000
	uiKDFSalt       = "llmspend web ui session signing key v1"
)

var uiKeyCache sync.Map // sha256(master key) -> []byte signing key

func uiSigningKey(master string) []byte {
	id := sha256.Sum256([]byte(master))
	if v, ok := uiKeyCache.Load(id); ok {
		return v.([]byte)
	}
	k, err := pbkdf2.Key(sha256.New, master, []byte(uiKDFSalt), uiKDFIterations, 32)
	if err != nil { // only for parameters outside FIPS limits; ours are fixed
		panic(err)
	}
	v, _ := uiKeyCache.LoadOrStore(id, k)
	return v.([]byte)
}

// uiRevoked holds signed-out session ids until they would have expired
// anyway, so a copied cookie stops working at sign-out (on this instance;
// on others it lives until its expiry).
var uiRevoked = struct {
	sync.Mutex
	m map[string]time.Time
}{m: map[string]time.Time{}}

func revokeSession(id string, exp time.Time) {
	uiRevoked.Lock()
	defer uiRevoked.Unlock()
	now := time.Now()
	for k, e := range uiRevoked.m {
		if e.Before(now) {
			delete(uiRevoked.m, k)
		}
	}
	uiRevoked.m[id] = exp
}

func sessionRevoked(id string) bool {
	uiRevoked.Lock()
	defer uiRevoked.Unlock()
	_, ok := uiRevoked.m[id]
	return ok
}

// uiSession is a signed-in browser.
type uiSession struct {
	ID      string // random, hex
	Expires time.Time
	CSRF    string
}

func uiMAC(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// newSessionCookie returns the cookie value "<id>.<expiry>.<mac>".
func newSessionCookie(key []byte, now time.Time) (string, *uiSession) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	return signSession(key, hex.EncodeToString(raw[:]), now.Add(uiSessionTTL).Truncate(time.Second))
}

func signSession(key []byte, id string, expires time.Time) (string, *uiSession) {
	s := &uiSession{ID: id, Expires: expires, CSRF: b64(uiMAC(key, "csrf", id))}
	var exp [8]byte
	binary.BigEndian.PutUint64(exp[:], uint64(expires.Unix()))
	payload := id + "." + b64(exp[:])
	return payload + "." + b64(uiMAC(key, "session", payload)), s
}

// parseSessionCookie verifies the signature and the expiry.
func parseSessionCookie(key []byte, v string, now time.Time) (*uiSession, bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return nil, false
	}
	payload, sig := v[:i], v[i+1:]
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, uiMAC(key, "session", payload)) {
		return nil, false
	}
	id, expStr, ok := strings.Cut(payload, ".")
	if !ok {
		return nil, false
	}
	expRaw, err := base64.RawURLEncoding.DecodeString(expStr)
	if err != nil || len(expRaw) != 8 {
		return nil, false
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(expRaw)), 0)
	if !now.Before(exp) || sessionRevoked(id) {
		return nil, false
	}
	return &uiSession{ID: id, Expires: exp, CSRF: b64(uiMAC(key, "csrf", id))}, true
}

// uiKey is nil while no master key is set: the UI is then closed like the API.
func (h *AdminHandler) uiKey() []byte {
	if h.app.MasterKey == "" {
		return nil
	}
	return uiSigningKey(h.app.MasterKey)
}

func (h *AdminHandler) session(r *http.Request) (*uiSession, bool) {
	key := h.uiKey()
	if key == nil {
		return nil, false
	}
	c, err := r.Cookie(uiCookieName)
	if err != nil || c.Value == "" {
		return nil, false
	}
	return parseSessionCookie(key, c.Value, h.now())
}

// crossOrigin rejects state-changing requests a browser marks as coming
// from another site (Sec-Fetch-Site / Origin), before any token is looked at.
var crossOrigin = http.NewCrossOriginProtection()

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// uiSessionOK reports whether r carries a valid UI session and, for a
// state-changing method, the session's CSRF token in the X-CSRF-Token
// header (the admin routes take JSON bodies, so a form field cannot carry
// it there) from a same-origin page.
func (h *AdminHandler) uiSessionOK(r *http.Request) bool {
	s, ok := h.session(r)
	if !ok {
		return false
	}
	if safeMethod(r.Method) {
		return true
	}
	if crossOrigin.Check(r) != nil {
		return false
	}
	return tokenEqual(r.Header.Get(uiCSRFHeader), s.CSRF)
}

func tokenEqual(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// formCSRFOK checks a UI form post (sign-out, invitation): same origin and
// the token in the form field or the header.
func formCSRFOK(r *http.Request, want string) bool {
	if crossOrigin.Check(r) != nil {
		return false
	}
	got := r.Header.Get(uiCSRFHeader)
	if got == "" {
		got = r.PostFormValue(uiCSRFField)
	}
	return tokenEqual(got, want)
}

func (h *AdminHandler) setSessionCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     uiCookieName,
		Value:    value,
		Path:     "/", // the pages' script calls /key/*, /user/*, /email/*
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

// uiHeaders are set on every UI response.
func uiHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", uiCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store") // pages hold CSRF tokens and, once, keys
}

// --- routes ---

// registerUIRoutes adds /ui routes and GET /spend/daily.
func (h *AdminHandler) registerUIRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui", h.uiRoot)
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui", http.StatusSeeOther)
	})
	mux.HandleFunc("POST /ui/login", h.uiLogin)
	mux.HandleFunc("POST /ui/logout", h.uiLogout)
	mux.HandleFunc("POST /ui/invitation", h.uiInvitationAccept)
	mux.HandleFunc("GET /ui/assets/{file}", uiAsset)
	mux.Handle("GET /ui/keys", h.uiPage(h.uiKeysPage))
	mux.Handle("GET /ui/keys/{id}", h.uiPage(h.uiKeyPage))
	mux.Handle("GET /ui/users", h.uiPage(h.uiUsersPage))
	mux.Handle("GET /ui/email", h.uiPage(h.uiEmailPage))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.uiMessage(w, r, http.StatusNotFound, "Page not found", "There is no page at this address.", "/ui", "Go to the dashboard")
	})
	mux.Handle("GET /spend/daily", h.guard(h.spendDaily))
}

// uiPage requires a session; without one the browser goes to sign-in.
func (h *AdminHandler) uiPage(f func(http.ResponseWriter, *http.Request, *uiSession)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.session(r)
		if !ok {
			http.Redirect(w, r, "/ui?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
			return
		}
		f(w, r, s)
	})
}

// uiRoot is the sign-in page, the invitation landing page
// (/ui?invitation_id=..., linked from invitation emails) or, when signed
// in, a redirect to the keys.
func (h *AdminHandler) uiRoot(w http.ResponseWriter, r *http.Request) {
	if id := r.URL.Query().Get("invitation_id"); id != "" {
		h.uiInvitation(w, r, id)
		return
	}
	if _, ok := h.session(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	h.renderLogin(w, http.StatusOK, "", r.URL.Query().Get("next"))
}

// safeNext keeps post-sign-in redirects on our own pages.
func safeNext(next string) string {
	if strings.HasPrefix(next, "/ui/") && !strings.HasPrefix(next, "//") && !strings.ContainsAny(next, "\\\r\n") {
		return path.Clean(next)
	}
	return "/ui/keys"
}

func (h *AdminHandler) renderLogin(w http.ResponseWriter, status int, errMsg, next string) {
	h.render(w, status, "login", pageData{
		Title:    "Sign in",
		Error:    errMsg,
		Next:     next,
		Disabled: h.app.MasterKey == "",
	})
}

func (h *AdminHandler) uiLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if crossOrigin.Check(r) != nil {
		h.uiMessage(w, r, http.StatusForbidden, "Request refused", "This form was sent from another site.", "/ui", "Sign in")
		return
	}
	master := h.app.MasterKey
	next := r.PostFormValue("next")
	if master == "" {
		h.renderLogin(w, http.StatusUnauthorized, "", next)
		return
	}
	got := strings.TrimSpace(r.PostFormValue("master_key"))
	ok, limited := h.masterKeyCheck(r, got)
	if limited {
		h.renderLogin(w, http.StatusTooManyRequests, "Too many failed attempts from this address. Try again in a minute.", next)
		return
	}
	if !ok {
		h.logger.Warn("web UI sign-in refused: wrong master key", zap.String("remote", r.RemoteAddr))
		h.renderLogin(w, http.StatusUnauthorized, "That is not the master key. Check MASTER_KEY in the gateway's environment.", next)
		return
	}
	v, _ := newSessionCookie(h.uiKey(), h.now())
	h.setSessionCookie(w, r, v, int(uiSessionTTL/time.Second))
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (h *AdminHandler) uiLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	s, ok := h.session(r)
	if ok && !formCSRFOK(r, s.CSRF) {
		h.uiMessage(w, r, http.StatusForbidden, "Request refused", "The sign-out form was stale or came from another site. Reload the page and try again.", "/ui/keys", "Back")
		return
	}
	if ok {
		revokeSession(s.ID, s.Expires)
	}
	h.setSessionCookie(w, r, "", -1)
	http.Redirect(w, r, "/ui", http.StatusSeeOther)
}

// --- templates and assets ---

var (
	uiTemplatesOnce sync.Once
	uiTemplates     map[string]*template.Template
	uiAssetVersion  string
)

func loadUITemplates() {
	base := template.Must(template.New("").Funcs(uiFuncs).ParseFS(uiAssets, "uiassets/layout.html"))
	pages, _ := fs.Glob(uiAssets, "uiassets/page_*.html")
	uiTemplates = map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(path.Base(p), "page_"), ".html")
		uiTemplates[name] = template.Must(template.Must(base.Clone()).ParseFS(uiAssets, p))
	}
	sum := sha256.New()
	for _, f := range []string{"uiassets/app.css", "uiassets/app.js"} {
		b, _ := uiAssets.ReadFile(f)
		sum.Write(b)
	}
	uiAssetVersion = hex.EncodeToString(sum.Sum(nil))[:12]
}

// pageData is what every page template gets; Data is the page's own.
type pageData struct {
	Title    string
	Nav      string // active nav entry
	CSRF     string
	Error    string
	Next     string
	Disabled bool
	Version  string
	Data     any
}

func (h *AdminHandler) render(w http.ResponseWriter, status int, name string, d pageData) {
	uiTemplatesOnce.Do(loadUITemplates)
	t, ok := uiTemplates[name]
	if !ok {
		panic("ui: no template " + name)
	}
	d.Version = uiAssetVersion
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		h.logger.Error("rendering web UI page", zap.String("page", name), zap.Error(err))
		uiHeaders(w)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("The page could not be rendered; see the gateway log.\n"))
		return
	}
	uiHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type messageData struct {
	Heading, Text, Link, LinkText string
}

// uiMessage renders a friendly full-page message (errors, not-found, used
// invitations) instead of a raw error.
func (h *AdminHandler) uiMessage(w http.ResponseWriter, r *http.Request, status int, heading, text, link, linkText string) {
	h.render(w, status, "message", pageData{Title: heading, Data: messageData{heading, text, link, linkText}})
}

func uiAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	var ctype string
	switch path.Ext(name) {
	case ".css":
		ctype = "text/css; charset=utf-8"
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".svg":
		ctype = "image/svg+xml"
	default:
		http.NotFound(w, r)
		return
	}
	b, err := uiAssets.ReadFile("uiassets/" + path.Base(name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	uiTemplatesOnce.Do(loadUITemplates)
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("X-Content-Type-Options", "nosniff")
	// URLs carry ?v=<content hash>, so a long cache is safe.
	if r.URL.Query().Get("v") == uiAssetVersion {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	_, _ = w.Write(b)
}
