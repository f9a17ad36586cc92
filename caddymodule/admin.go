package caddymodule

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/alerts"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

func init() {
	caddy.RegisterModule(AdminHandler{})
}

// AdminHandler serves the LiteLLM-compatible admin API (/user/new,
// /key/generate, ...) inside the user's site, so their matchers, TLS and
// extra auth apply. Requests for other paths go to the next handler.
type AdminHandler struct {
	app    *App
	state  *sharedState
	logger *zap.Logger
	mux    *http.ServeMux
	now    func() time.Time
	// authFails slows down master-key guessing (per handler instance, so
	// a reload starts the count afresh).
	authFails *authLimiter
}

// CaddyModule returns the Caddy module information.
func (AdminHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_spend_admin",
		New: func() caddy.Module { return new(AdminHandler) },
	}
}

// Provision sets up the routes.
func (h *AdminHandler) Provision(ctx caddy.Context) (err error) {
	h.logger = ctx.Logger()
	h.app, err = loadApp(ctx)
	if err != nil {
		return err
	}
	h.state = h.app.state
	h.now = time.Now
	h.authFails = new(authLimiter)
	mux := http.NewServeMux()
	// LiteLLM leaves liveliness open for orchestrator probes.
	mux.HandleFunc("GET /health/liveliness", h.liveliness)
	mux.HandleFunc("GET /health/liveness", h.liveliness)
	mux.Handle("POST /user/new", h.guard(h.userNew))
	mux.Handle("GET /user/info", h.guard(h.userInfo))
	mux.Handle("POST /key/generate", h.guard(h.keyGenerate))
	mux.Handle("POST /key/regenerate", h.guard(h.keyRegenerate))
	mux.Handle("POST /key/{key}/regenerate", h.guard(h.keyRegenerate))
	mux.Handle("GET /key/info", h.guard(h.keyInfo))
	mux.Handle("POST /key/update", h.guard(h.keyUpdate))
	mux.Handle("POST /key/delete", h.guard(h.keyDelete))
	mux.Handle("GET /key/list", h.guard(h.keyList))
	mux.Handle("GET /email/outbox", h.guard(h.emailOutbox))
	mux.Handle("POST /email/outbox/{id}/retry", h.guard(h.emailRetry))
	mux.Handle("POST /email/test", h.guard(h.emailTest))
	mux.Handle("GET /email/preview/{template}", h.guard(h.emailPreview))
	h.registerInvitationRoutes(mux)
	h.registerUIRoutes(mux)
	h.mux = mux
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *AdminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		return next.ServeHTTP(w, r)
	}
	h.mux.ServeHTTP(w, r)
	return nil
}

// guard enforces the master key (masterKeyCheck: constant time, failures
// limited per client).
func (h *AdminHandler) guard(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A signed-in web UI session (cookie + CSRF token) counts as the master key.
		if h.uiSessionOK(r) {
			f(w, r)
			return
		}
		master := h.app.MasterKey
		if master == "" {
			writeError(w, http.StatusUnauthorized, errAuth, "Admin API disabled: MASTER_KEY is not set. Set master_key in the llm_spend global options (Caddyfile.example reads the MASTER_KEY environment variable).", "")
			return
		}
		got, ok := credential(r)
		if !ok {
			writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, No api key passed in. Send Authorization: Bearer <MASTER_KEY>.", "")
			return
		}
		switch ok, limited := h.masterKeyCheck(r, got); {
		case limited:
			writeError(w, http.StatusTooManyRequests, errRateLimited, "Too many failed master key attempts from this client; try again in a minute.", "")
			return
		case !ok:
			writeError(w, http.StatusUnauthorized, errAuth, "Authentication Error, invalid master key.", "")
			return
		}
		f(w, r)
	})
}

func (h *AdminHandler) liveliness(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, "I'm alive!")
}

// liveSpend returns an entity's current spend and reset time. The store's
// value is the durable record; the ledger (when present) is fresher.
func (h *AdminHandler) liveSpend(kind, id string, stored money.Pico, resetAt *time.Time) (money.Pico, *time.Time) {
	if snap, ok := h.state.ledger.Snapshot(kind, id); ok {
		if snap.ResetAt != nil {
			resetAt = snap.ResetAt
		}
		return snap.Spend, resetAt
	}
	return stored, resetAt
}

// keyChanged publishes a created, updated or regenerated key to the
// request path: the key cache and the ledger's budget configuration.
func (h *AdminHandler) keyChanged(k *store.Key) {
	h.state.keys.put(*k)
	h.state.ledger.Upsert(accountOfKey(k))
}

// newPlainKey returns "sk-" + 192 random bits, URL-safe.
func newPlainKey() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "sk-" + base64.RawURLEncoding.EncodeToString(b[:])
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// --- keys ---

type generateKeyRequest struct {
	UserID          *string        `json:"user_id"`
	KeyAlias        *string        `json:"key_alias"`
	Key             *string        `json:"key"`
	Duration        *string        `json:"duration"`
	Models          []string       `json:"models"`
	MaxBudget       *float64       `json:"max_budget"`
	SoftBudget      *float64       `json:"soft_budget"`
	BudgetDuration  *string        `json:"budget_duration"`
	Metadata        map[string]any `json:"metadata"`
	Blocked         *bool          `json:"blocked"`
	SendInviteEmail *bool          `json:"send_invite_email"`
}

// badRequest is a validation failure that names its field.
type badRequest struct {
	field string
	msg   string
}

func (e *badRequest) Error() string { return e.msg }

func writeErr(w http.ResponseWriter, h *AdminHandler, err error) {
	var br *badRequest
	switch {
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, errInvalid, br.msg, br.field)
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, errNotFound, err.Error(), "")
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, errConflict, err.Error(), "")
	default:
		h.logger.Error("admin request failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, errInternal, "internal error; see the gateway log", "")
	}
}

// validatePlainKey checks a caller-chosen key.
func validatePlainKey(k string) error {
	if !strings.HasPrefix(k, "sk-") || len(k) < 20 {
		return &badRequest{"key", "key must start with sk- and be at least 20 characters"}
	}
	return nil
}

func (h *AdminHandler) buildKey(req *generateKeyRequest, now time.Time) (*store.Key, string, error) {
	plain := newPlainKey()
	if req.Key != nil {
		if err := validatePlainKey(*req.Key); err != nil {
			return nil, "", err
		}
		plain = *req.Key
	}
	k := &store.Key{
		ID:        newID(),
		Token:     tokenHex(hashKey(plain)),
		KeyName:   redactKey(plain),
		Models:    req.Models,
		Metadata:  req.Metadata,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if err := validateKeyMetadata(req.Metadata); err != nil {
		return nil, "", err
	}
	if req.KeyAlias != nil {
		k.KeyAlias = *req.KeyAlias
	}
	if req.UserID != nil {
		k.UserID = *req.UserID
	}
	if req.Blocked != nil {
		k.Blocked = *req.Blocked
	}
	var err error
	if k.MaxBudget, err = budget("max_budget", req.MaxBudget); err != nil {
		return nil, "", err
	}
	if k.SoftBudget, err = budget("soft_budget", req.SoftBudget); err != nil {
		return nil, "", err
	}
	if req.Duration != nil && *req.Duration != "" {
		exp, err := spend.NextReset(now, *req.Duration)
		if err != nil {
			return nil, "", &badRequest{"duration", "duration: " + err.Error()}
		}
		k.Expires = &exp
	}
	if req.BudgetDuration != nil && *req.BudgetDuration != "" {
		reset, err := spend.NextReset(now, *req.BudgetDuration)
		if err != nil {
			return nil, "", &badRequest{"budget_duration", "budget_duration: " + err.Error()}
		}
		k.BudgetDuration = *req.BudgetDuration
		k.BudgetResetAt = &reset
	}
	return k, plain, nil
}

func (h *AdminHandler) keyGenerate(w http.ResponseWriter, r *http.Request) {
	var req generateKeyRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	now := h.now().UTC()
	k, plain, err := h.buildKey(&req, now)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	if k.UserID != "" {
		if _, err := h.state.store.GetUser(r.Context(), k.UserID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusBadRequest, errInvalid, "user_id "+k.UserID+" does not exist; create it with /user/new first", "user_id")
				return
			}
			writeErr(w, h, err)
			return
		}
	}
	if err := h.state.store.CreateKey(r.Context(), k); err != nil {
		writeErr(w, h, err)
		return
	}
	h.keyChanged(k)
	resp := generateKeyResponse{Key: plain, keyInfo: h.keyInfoOf(k), TokenID: k.Token, SendInviteEmail: req.SendInviteEmail}
	resp.Warnings = h.notifyKeyCreated(r.Context(), k, plain, req.SendInviteEmail)
	writeJSON(w, http.StatusOK, resp)
}

// lookupKey resolves a key given as the plain "sk-..." value or as its
// hashed token.
func (h *AdminHandler) lookupKey(r *http.Request, given string) (*store.Key, error) {
	given = strings.TrimSpace(given)
	if given == "" {
		return nil, &badRequest{"key", "key is required"}
	}
	token := given
	if _, ok := parseToken(given); !ok {
		token = tokenHex(hashKey(given))
	}
	k, err := h.state.store.GetKeyByToken(r.Context(), token)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("Key not found in database: %w", store.ErrNotFound)
	}
	return k, err
}

type regenerateRequest struct {
	Key    *string `json:"key"`
	NewKey *string `json:"new_key"`
}

func (h *AdminHandler) keyRegenerate(w http.ResponseWriter, r *http.Request) {
	var req regenerateRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	given := r.PathValue("key")
	if given == "" && req.Key != nil {
		given = *req.Key
	}
	old, err := h.lookupKey(r, given)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	plain := newPlainKey()
	if req.NewKey != nil {
		if err := validatePlainKey(*req.NewKey); err != nil {
			writeErr(w, h, &badRequest{"new_key", err.Error()})
			return
		}
		plain = *req.NewKey
	}
	k, err := h.state.store.RegenerateKey(r.Context(), old.ID, tokenHex(hashKey(plain)), redactKey(plain))
	if err != nil {
		writeErr(w, h, err)
		return
	}
	// The old token stops resolving at once: put replaces it by ID.
	h.keyChanged(k)
	resp := generateKeyResponse{Key: plain, keyInfo: h.keyInfoOf(k), TokenID: k.Token}
	resp.Warnings = h.notifyKeyRotated(r.Context(), k, plain)
	writeJSON(w, http.StatusOK, resp)
}

func (h *AdminHandler) keyInfo(w http.ResponseWriter, r *http.Request) {
	given := r.URL.Query().Get("key")
	k, err := h.lookupKey(r, given)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": given, "info": h.keyInfoOf(k)})
}

type updateKeyRequest struct {
	Key            string              `json:"key"`
	KeyAlias       opt[string]         `json:"key_alias"`
	UserID         opt[string]         `json:"user_id"`
	Duration       opt[string]         `json:"duration"`
	Models         opt[[]string]       `json:"models"`
	MaxBudget      opt[float64]        `json:"max_budget"`
	SoftBudget     opt[float64]        `json:"soft_budget"`
	BudgetDuration opt[string]         `json:"budget_duration"`
	Metadata       opt[map[string]any] `json:"metadata"`
	Blocked        opt[bool]           `json:"blocked"`
}

func (h *AdminHandler) applyKeyUpdate(k *store.Key, req *updateKeyRequest, now time.Time) error {
	if req.KeyAlias.Set {
		k.KeyAlias = req.KeyAlias.V
	}
	if req.UserID.Set {
		k.UserID = req.UserID.V
	}
	if req.Models.Set {
		k.Models = req.Models.V
	}
	if req.Metadata.Set {
		if err := validateKeyMetadata(req.Metadata.V); err != nil {
			return err
		}
		k.Metadata = req.Metadata.V
	}
	if req.Blocked.Set {
		k.Blocked = req.Blocked.V
	}
	var err error
	if req.MaxBudget.Set {
		if k.MaxBudget, err = budget("max_budget", req.MaxBudget.ptr()); err != nil {
			return err
		}
	}
	if req.SoftBudget.Set {
		if k.SoftBudget, err = budget("soft_budget", req.SoftBudget.ptr()); err != nil {
			return err
		}
	}
	if req.Duration.Set {
		k.Expires = nil
		if req.Duration.V != "" {
			exp, err := spend.NextReset(now, req.Duration.V)
			if err != nil {
				return &badRequest{"duration", "duration: " + err.Error()}
			}
			k.Expires = &exp
		}
	}
	if req.BudgetDuration.Set {
		k.BudgetDuration = req.BudgetDuration.V
		if k.BudgetDuration != "" {
			if _, err := spend.NextReset(now, k.BudgetDuration); err != nil {
				return &badRequest{"budget_duration", "budget_duration: " + err.Error()}
			}
		}
	}
	k.UpdatedAt = now
	return nil
}

func (h *AdminHandler) keyUpdate(w http.ResponseWriter, r *http.Request) {
	var req updateKeyRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	k, err := h.lookupKey(r, req.Key)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	if err := h.applyKeyUpdate(k, &req, h.now().UTC()); err != nil {
		writeErr(w, h, err)
		return
	}
	if req.UserID.Valid && req.UserID.V != "" {
		if _, err := h.state.store.GetUser(r.Context(), req.UserID.V); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusBadRequest, errInvalid, "user_id "+req.UserID.V+" does not exist", "user_id")
				return
			}
			writeErr(w, h, err)
			return
		}
	}
	if err := h.state.store.UpdateKey(r.Context(), k); err != nil {
		writeErr(w, h, err)
		return
	}
	fresh, err := h.state.store.GetKey(r.Context(), k.ID)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	h.keyChanged(fresh)
	writeJSON(w, http.StatusOK, h.keyInfoOf(fresh))
}

type deleteKeysRequest struct {
	Keys []string `json:"keys"`
}

func (h *AdminHandler) keyDelete(w http.ResponseWriter, r *http.Request) {
	var req deleteKeysRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	if len(req.Keys) == 0 {
		writeErr(w, h, &badRequest{"keys", "keys must list at least one key"})
		return
	}
	// Resolve all first: an unknown key fails the whole call and deletes nothing.
	ids := make([]string, 0, len(req.Keys))
	for _, given := range req.Keys {
		k, err := h.lookupKey(r, given)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusNotFound, errNotFound, "Key not found in database: "+redactKey(given)+"; nothing was deleted", "keys")
				return
			}
			writeErr(w, h, err)
			return
		}
		ids = append(ids, k.ID)
	}
	if _, err := h.state.store.DeleteKeys(r.Context(), ids); err != nil {
		writeErr(w, h, err)
		return
	}
	for _, id := range ids {
		h.state.keys.remove(id)
		h.state.ledger.Remove(store.KindKey, id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted_keys": req.Keys})
}

func (h *AdminHandler) keyList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	keys, err := h.state.store.ListKeys(r.Context(), q.Get("user_id"))
	if err != nil {
		writeErr(w, h, err)
		return
	}
	page, size := 1, 100
	if v := q.Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			writeErr(w, h, &badRequest{"page", "page must be a positive integer"})
			return
		}
	}
	if v := q.Get("size"); v != "" {
		if size, err = strconv.Atoi(v); err != nil || size < 1 || size > 1000 {
			writeErr(w, h, &badRequest{"size", "size must be an integer between 1 and 1000"})
			return
		}
	}
	total := len(keys)
	start := min((page-1)*size, total)
	end := min(start+size, total)
	full := q.Get("return_full_object") == "true"
	out := make([]any, 0, end-start)
	for i := start; i < end; i++ {
		if full {
			out = append(out, h.keyInfoOf(&keys[i]))
		} else {
			out = append(out, keys[i].Token)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"keys":         out,
		"total_count":  total,
		"current_page": page,
		"total_pages":  (total + size - 1) / size,
	})
}

// --- users ---

type newUserRequest struct {
	UserEmail       *string        `json:"user_email"`
	UserID          *string        `json:"user_id"`
	UserAlias       *string        `json:"user_alias"`
	UserRole        *string        `json:"user_role"`
	MaxBudget       *float64       `json:"max_budget"`
	SoftBudget      *float64       `json:"soft_budget"`
	BudgetDuration  *string        `json:"budget_duration"`
	Models          []string       `json:"models"`
	Metadata        map[string]any `json:"metadata"`
	SendInviteEmail *bool          `json:"send_invite_email"`
	AutoCreateKey   *bool          `json:"auto_create_key"`
	KeyAlias        *string        `json:"key_alias"`
	Duration        *string        `json:"duration"`
}

var userRoles = map[string]bool{"proxy_admin": true, "proxy_admin_viewer": true, "internal_user": true, "internal_user_viewer": true}

func (h *AdminHandler) userNew(w http.ResponseWriter, r *http.Request) {
	var req newUserRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	now := h.now().UTC()
	u := &store.User{
		UserID:    newID(),
		UserRole:  "internal_user",
		Models:    req.Models,
		Metadata:  req.Metadata,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if req.UserID != nil && *req.UserID != "" {
		u.UserID = *req.UserID
	}
	if req.UserEmail != nil {
		u.UserEmail = strings.TrimSpace(*req.UserEmail)
		if u.UserEmail != "" && !alerts.ValidEmail(u.UserEmail) {
			writeErr(w, h, &badRequest{"user_email", "user_email is not a valid email address"})
			return
		}
	}
	if req.UserAlias != nil {
		u.UserAlias = *req.UserAlias
	}
	if req.UserRole != nil {
		if !userRoles[*req.UserRole] {
			writeErr(w, h, &badRequest{"user_role", "user_role must be one of proxy_admin, proxy_admin_viewer, internal_user, internal_user_viewer"})
			return
		}
		u.UserRole = *req.UserRole
	}
	var err error
	if u.MaxBudget, err = budget("max_budget", req.MaxBudget); err != nil {
		writeErr(w, h, err)
		return
	}
	if u.SoftBudget, err = budget("soft_budget", req.SoftBudget); err != nil {
		writeErr(w, h, err)
		return
	}
	if req.BudgetDuration != nil && *req.BudgetDuration != "" {
		reset, err := spend.NextReset(now, *req.BudgetDuration)
		if err != nil {
			writeErr(w, h, &badRequest{"budget_duration", "budget_duration: " + err.Error()})
			return
		}
		u.BudgetDuration = *req.BudgetDuration
		u.BudgetResetAt = &reset
	}
	// Build the key before writing anything, so a bad key field leaves the store unchanged.
	var (
		k     *store.Key
		plain string
	)
	if req.AutoCreateKey == nil || *req.AutoCreateKey {
		var err error
		k, plain, err = h.buildKey(&generateKeyRequest{UserID: &u.UserID, KeyAlias: req.KeyAlias, Duration: req.Duration, Models: req.Models}, now)
		if err != nil {
			writeErr(w, h, err)
			return
		}
	}
	if err := h.state.store.CreateUser(r.Context(), u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, http.StatusConflict, errConflict, "User with user_id "+u.UserID+" already exists", "user_id")
			return
		}
		writeErr(w, h, err)
		return
	}
	h.state.ledger.Upsert(accountOfUser(u))
	resp := map[string]any{
		"user_id":           u.UserID,
		"user_email":        strPtr(u.UserEmail),
		"user_alias":        strPtr(u.UserAlias),
		"user_role":         u.UserRole,
		"max_budget":        usd(u.MaxBudget),
		"soft_budget":       usd(u.SoftBudget),
		"budget_duration":   strPtr(u.BudgetDuration),
		"budget_reset_at":   u.BudgetResetAt,
		"models":            nonNilModels(u.Models),
		"metadata":          nonNilMeta(u.Metadata),
		"teams":             []string{},
		"spend":             0.0,
		"send_invite_email": req.SendInviteEmail,
	}
	if k != nil {
		if err := h.state.store.CreateKey(r.Context(), k); err != nil {
			writeErr(w, h, err)
			return
		}
		h.keyChanged(k)
		resp["key"] = plain
		resp["token"] = k.Token
		resp["key_name"] = k.KeyName
		resp["key_alias"] = strPtr(k.KeyAlias)
		resp["expires"] = k.Expires
	}
	if warnings := h.notifyUserCreated(r.Context(), u, k, plain, req.SendInviteEmail); len(warnings) > 0 {
		resp["warnings"] = warnings
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *AdminHandler) userInfo(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("user_id")
	if id == "" {
		writeErr(w, h, &badRequest{"user_id", "user_id is required"})
		return
	}
	u, err := h.state.store.GetUser(r.Context(), id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, errNotFound, "User not found: "+id, "user_id")
			return
		}
		writeErr(w, h, err)
		return
	}
	keys, err := h.state.store.ListKeys(r.Context(), id)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	infos := make([]keyInfo, 0, len(keys))
	for i := range keys {
		infos = append(infos, h.keyInfoOf(&keys[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"user_id":   u.UserID,
		"user_info": h.userInfoOf(u),
		"keys":      infos,
		"teams":     []any{},
	})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*AdminHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AdminHandler)(nil)
)
