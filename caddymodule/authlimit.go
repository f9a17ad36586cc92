package caddymodule

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Master-key guessing is slowed down per client: after maxAuthFailures
// wrong keys within authFailureWindow, that client gets 429 until the
// window has passed, right key or not. The master key is chosen by people
// and may be weak; the admin API and the UI sign-in share the limit.
const (
	maxAuthFailures   = 20
	authFailureWindow = time.Minute
	maxTrackedClients = 10_000
)

type failWindow struct {
	start time.Time
	n     int
}

// authLimiter counts failed master-key attempts per client IP.
type authLimiter struct {
	mu sync.Mutex
	m  map[string]*failWindow
}

func (l *authLimiter) blocked(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.m[ip]
	if w == nil || now.Sub(w.start) >= authFailureWindow {
		return false
	}
	return w.n >= maxAuthFailures
}

func (l *authLimiter) fail(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxTrackedClients {
		l.m = make(map[string]*failWindow) // bound memory; forgetting is safe
	}
	w := l.m[ip]
	if w == nil || now.Sub(w.start) >= authFailureWindow {
		w = &failWindow{start: now}
		l.m[ip] = w
	}
	w.n++
}

// clientIP is Caddy's client IP (trusted proxies honoured), else the peer.
func clientIP(r *http.Request) string {
	if v, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && v != "" {
		return v
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// masterKeyCheck compares got with the master key in constant time (of
// digests, so the key's length doesn't leak either) under the failure
// limit. limited means the client is refused without a compare.
func (h *AdminHandler) masterKeyCheck(r *http.Request, got string) (ok, limited bool) {
	ip, now := clientIP(r), h.now()
	if h.authFails.blocked(ip, now) {
		return false, true
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(h.app.MasterKey))
	if got == "" || h.app.MasterKey == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		h.authFails.fail(ip, now)
		return false, false
	}
	return true, false
}
