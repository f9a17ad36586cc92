package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the gateway middleware: it authenticates the virtual key,
// checks the model and the budget, removes the client's credentials and
// meters the upstream response. Put it before reverse_proxy.
type Handler struct {
	app    *App
	state  *sharedState
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_spend",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fetches the llm_spend app; an unconfigured app is created with
// its defaults, so `llm_spend` alone runs on the embedded store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	appIface, err := ctx.App("llm_spend")
	if err != nil {
		return fmt.Errorf("loading llm_spend app: %w", err)
	}
	h.app = appIface.(*App)
	h.state = h.app.state
	h.now = time.Now
	return nil
}

// bodyPool recycles request-body buffers: the body is read to find the
// model and is handed to the upstream from the same buffer.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// credential returns the virtual key from Authorization: Bearer or
// x-api-key (Anthropic SDKs).
func credential(r *http.Request) (string, bool) {
	if v := r.Header.Get("Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			if k := strings.TrimSpace(v[7:]); k != "" {
				return k, true
			}
		}
	}
	if v := strings.TrimSpace(r.Header.Get("X-Api-Key")); v != "" {
		return v, true
	}
	return "", false
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	plain, ok := credential(r)
	// The virtual key never goes further than this handler: the upstream
	// gets only the provider key that reverse_proxy's header_up sets.
	r.Header.Del("Authorization")
	r.Header.Del("X-Api-Key")
	if !ok {
		writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, No api key passed in.", "")
		return nil
	}
	now := h.now()
	ck, err := h.state.keys.get(r.Context(), hashKey(plain), now)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, Invalid proxy server token passed. Received API key = "+redactKey(plain)+".", "")
			return nil
		}
		h.logger.Error("key lookup failed", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, errInternal, "key store unavailable", "")
		return nil
	}
	if ck.key.Blocked {
		writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, Key is blocked. Key="+redactKey(plain), "")
		return nil
	}
	if ck.expires != 0 && now.UnixNano() >= ck.expires {
		writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error - Expired Key. Key Expiry time "+ck.key.Expires.UTC().Format(time.RFC3339)+" and current time "+now.UTC().Format(time.RFC3339), "")
		return nil
	}

	format, metered := spend.FormatForPath(r.URL.Path)
	if !metered || r.Method != http.MethodPost {
		return next.ServeHTTP(w, r)
	}

	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 { // don't keep huge buffers alive
			bodyPool.Put(buf)
		}
	}()
	limit := h.app.MaxRequestBody
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1)); err != nil {
		writeError(w, http.StatusBadRequest, errInvalid, "could not read request body: "+err.Error(), "")
		return nil
	}
	_ = r.Body.Close()
	if int64(buf.Len()) > limit {
		writeError(w, http.StatusBadRequest, errInvalid, fmt.Sprintf("request body exceeds the limit of %d bytes", limit), "")
		return nil
	}
	body := buf.Bytes()
	info, err := spend.InspectRequest(format, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, errInvalid, "Invalid JSON request body: "+err.Error(), "")
		return nil
	}
	if !ck.allows(info.Model) {
		writeError(w, http.StatusForbidden, errModelDenied,
			fmt.Sprintf("key not allowed to access model. This key can only access models=%v. Tried to access %s", ck.key.Models, info.Model), "model")
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return next.ServeHTTP(w, r)
}

// redactKey shows a key the way LiteLLM does in messages: sk-...last4.
func redactKey(k string) string {
	if len(k) <= 8 {
		return "sk-..."
	}
	return "sk-..." + k[len(k)-4:]
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
