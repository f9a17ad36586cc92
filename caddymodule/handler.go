package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
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
func (h *Handler) Provision(ctx caddy.Context) (err error) {
	h.logger = ctx.Logger()
	h.app, err = loadApp(ctx)
	if err != nil {
		return err
	}
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
	m := gwMetrics()
	if !ok {
		m.unauthenticatedRequest(http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, No api key passed in.", "")
		return nil
	}
	now := h.now()
	ck, err := h.state.keys.get(r.Context(), hashKey(plain), now)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			m.unauthenticatedRequest(http.StatusUnauthorized)
			writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, Invalid proxy server token passed. Received API key = "+redactKey(plain)+".", "")
			return nil
		}
		h.logger.Error("key lookup failed", zap.Error(err))
		m.unauthenticatedRequest(http.StatusServiceUnavailable)
		writeError(w, http.StatusServiceUnavailable, errInternal, "key store unavailable", "")
		return nil
	}
	if ck.key.Blocked {
		m.forKey(ck, "", h.app.prices).request(http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, Key is blocked. Key="+redactKey(plain), "")
		return nil
	}
	if ck.expires != 0 && now.UnixNano() >= ck.expires {
		m.forKey(ck, "", h.app.prices).request(http.StatusUnauthorized)
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
		m.forKey(ck, "", h.app.prices).request(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, errInvalid, "could not read request body: "+err.Error(), "")
		return nil
	}
	_ = r.Body.Close()
	if int64(buf.Len()) > limit {
		m.forKey(ck, "", h.app.prices).request(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, errInvalid, fmt.Sprintf("request body exceeds the limit of %d bytes", limit), "")
		return nil
	}
	body := buf.Bytes()
	info, err := spend.InspectRequest(format, body)
	if err != nil {
		m.forKey(ck, "", h.app.prices).request(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, errInvalid, "Invalid JSON request body: "+err.Error(), "")
		return nil
	}
	series := m.forKey(ck, info.Model, h.app.prices)
	if !ck.allows(info.Model) {
		series.request(http.StatusForbidden)
		writeError(w, http.StatusForbidden, errModelDenied,
			fmt.Sprintf("key not allowed to access model. This key can only access models=%v. Tried to access %s", ck.key.Models, info.Model), "model")
		return nil
	}
	return h.meter(w, r, next, ck, format, info, body, series)
}

// meter reserves budget, proxies while metering the response, and charges
// the ledger with the exact cost (nothing for an upstream error).
func (h *Handler) meter(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ck *cachedKey, format spend.Format, info spend.RequestInfo, body []byte, series *seriesSet) error {
	price, known := h.app.prices.Lookup(info.Model)
	if !known && info.Model != "" {
		warnUnknownModel(h.logger, info.Model)
	}
	res, berr := h.state.ledger.Reserve(ck.key.ID, ck.key.UserID, spend.EstimateCost(format, price, info))
	if berr != nil {
		series.budgetRejected()
		writeError(w, http.StatusTooManyRequests, errBudget, budgetMessage(ck, berr), "")
		return nil
	}

	strip := false
	if info.Stream {
		// Usage is read from the stream as it passes; a compressed stream
		// could not be read without holding it back.
		r.Header.Del("Accept-Encoding")
		if (format == spend.OpenAIChat || format == spend.OpenAICompletions) && !info.IncludeUsage {
			if injected, ok := spend.InjectIncludeUsage(body); ok {
				body, strip = injected, true
			}
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if r.Header.Get("Content-Length") != "" {
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}

	mw := newMeteringWriter(w, format, strip, info.PromptEstimate)
	defer mw.release()
	err := next.ServeHTTP(mw, r)

	var cost money.Pico
	var model string
	usage, ok := mw.finish(func(u spend.Usage) string {
		cost, model = h.price(u, info.Model, price, known, format)
		return cost.String()
	})
	// An upstream error is not billed. A stream the client abandoned is
	// (err may be set then): the upstream produced it.
	series.request(responseStatus(mw.status, err))
	if !ok || mw.status < 200 || mw.status > 299 {
		h.state.ledger.Release(res)
		return err
	}
	if mw.mode == modeSSE {
		cost, model = h.price(usage, info.Model, price, known, format)
	}
	inTok := usage.TotalInputTokens(format)
	h.state.ledger.Commit(res, cost, model, inTok, usage.OutputTokens)
	series.billed(inTok, usage.OutputTokens, cost)
	return err
}

// responseStatus is the status the client gets: the upstream's, or, when
// nothing was written, the one Caddy's error handling will send.
func responseStatus(written int, err error) int {
	if written != 0 {
		return written
	}
	if err == nil {
		return http.StatusOK
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusBadGateway
}

// price prices usage, preferring the model the upstream reports (it may be
// a dated version with its own price) over the requested one.
func (h *Handler) price(u spend.Usage, reqModel string, reqPrice spend.Price, reqKnown bool, f spend.Format) (money.Pico, string) {
	model, p := reqModel, reqPrice
	if u.Model != "" && u.Model != reqModel {
		if rp, ok := h.app.prices.Lookup(u.Model); ok {
			model, p, reqKnown = u.Model, rp, true
		}
	}
	if !reqKnown {
		return 0, model
	}
	return spend.Cost(f, p, u), model
}

// budgetMessage is LiteLLM's budget_exceeded message.
func budgetMessage(ck *cachedKey, e *spend.BudgetError) string {
	who := ck.key.KeyAlias
	if who == "" {
		who = ck.key.UserID
	}
	msg := "Budget has been exceeded! Key=" + who + " (" + ck.key.KeyName + ") Current cost: " + e.Spend.String() + ", Max budget: " + e.MaxBudget.String()
	if e.Kind == store.KindUser {
		msg += " (budget of user " + e.ID + ")"
	}
	if !e.Exhausted {
		msg += " (requests in flight reserve the rest of the budget; retry shortly)"
	}
	return msg
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
