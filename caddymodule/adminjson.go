package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// opt is a JSON field that remembers whether it was present, so /key/update
// can tell "leave alone" (absent) from "clear" (null).
type opt[T any] struct {
	Set   bool // present in the JSON
	Valid bool // present and not null
	V     T
}

// ptr is the value, or nil when absent or null.
func (o *opt[T]) ptr() *T {
	if !o.Valid {
		return nil
	}
	return &o.V
}

func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		return nil
	}
	if err := json.Unmarshal(b, &o.V); err != nil {
		return err
	}
	o.Valid = true
	return nil
}

// decodeJSON reads a JSON body into v, naming the field on a type error.
// It writes the error response itself and reports whether decoding worked.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, errInvalid, fmt.Sprintf("request body exceeds the admin limit of %d bytes", limit), "")
			return false
		}
		writeError(w, http.StatusBadRequest, errInvalid, "could not read request body: "+err.Error(), "")
		return false
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			writeError(w, http.StatusBadRequest, errInvalid, fmt.Sprintf("field %q must be %s, got %s", te.Field, jsonTypeName(te.Type.Kind().String()), te.Value), te.Field)
		case errors.As(err, &se):
			writeError(w, http.StatusBadRequest, errInvalid, fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err), "")
		default:
			writeError(w, http.StatusBadRequest, errInvalid, "malformed JSON: "+err.Error(), "")
		}
		return false
	}
	return true
}

func jsonTypeName(kind string) string {
	switch kind {
	case "float64", "float32", "int", "int64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	case "ptr":
		return "a value of another type"
	}
	return kind
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// usd converts an optional Pico to the JSON number LiteLLM shows.
func usd(p *money.Pico) *float64 {
	if p == nil {
		return nil
	}
	f := p.USD()
	return &f
}

// budget validates an optional budget given in USD (nil stays nil); a bad
// one is a badRequest naming the field.
func budget(field string, f *float64) (*money.Pico, error) {
	if f == nil {
		return nil, nil
	}
	if *f < 0 {
		return nil, &badRequest{field, field + " must not be negative"}
	}
	if *f > 1e6 {
		return nil, &badRequest{field, field + " is too large (max 1000000 USD)"}
	}
	p := money.FromUSD(*f)
	return &p, nil
}

// keyInfo is the LiteLLM key row as /key/info, /key/list and /user/info show it.
type keyInfo struct {
	Token          string         `json:"token"`
	KeyName        string         `json:"key_name"`
	KeyAlias       *string        `json:"key_alias"`
	UserID         *string        `json:"user_id"`
	Spend          float64        `json:"spend"`
	MaxBudget      *float64       `json:"max_budget"`
	SoftBudget     *float64       `json:"soft_budget"`
	BudgetDuration *string        `json:"budget_duration"`
	BudgetResetAt  *time.Time     `json:"budget_reset_at"`
	Models         []string       `json:"models"`
	Metadata       map[string]any `json:"metadata"`
	Expires        *time.Time     `json:"expires"`
	Blocked        bool           `json:"blocked"`
	CreatedAt      time.Time      `json:"created_at"`
	UpdatedAt      time.Time      `json:"updated_at"`
	LastUsedAt     *time.Time     `json:"last_used_at"`
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonNilModels(m []string) []string {
	if m == nil {
		return []string{}
	}
	return m
}

func nonNilMeta(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (h *AdminHandler) keyInfoOf(k *store.Key) keyInfo {
	sp, resetAt := h.liveSpend(store.KindKey, k.ID, k.Spend, k.BudgetResetAt)
	return keyInfo{
		Token:          k.Token,
		KeyName:        k.KeyName,
		KeyAlias:       strPtr(k.KeyAlias),
		UserID:         strPtr(k.UserID),
		Spend:          sp.USD(),
		MaxBudget:      usd(k.MaxBudget),
		SoftBudget:     usd(k.SoftBudget),
		BudgetDuration: strPtr(k.BudgetDuration),
		BudgetResetAt:  resetAt,
		Models:         nonNilModels(k.Models),
		Metadata:       nonNilMeta(k.Metadata),
		Expires:        k.Expires,
		Blocked:        k.Blocked,
		CreatedAt:      k.CreatedAt,
		UpdatedAt:      k.UpdatedAt,
		LastUsedAt:     k.LastUsedAt,
	}
}

// generateKeyResponse is LiteLLM's GenerateKeyResponse: the key row plus
// the plain key, shown once.
type generateKeyResponse struct {
	Key string `json:"key"`
	keyInfo
	TokenID         string   `json:"token_id"`
	SendInviteEmail *bool    `json:"send_invite_email,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
}

// userInfo is the LiteLLM user row.
type userInfo struct {
	UserID         string         `json:"user_id"`
	UserEmail      *string        `json:"user_email"`
	UserAlias      *string        `json:"user_alias"`
	UserRole       string         `json:"user_role"`
	Spend          float64        `json:"spend"`
	MaxBudget      *float64       `json:"max_budget"`
	SoftBudget     *float64       `json:"soft_budget"`
	BudgetDuration *string        `json:"budget_duration"`
	BudgetResetAt  *time.Time     `json:"budget_reset_at"`
	Models         []string       `json:"models"`
	Metadata       map[string]any `json:"metadata"`
	Teams          []string       `json:"teams"`
	CreatedAt      time.Time      `json:"created_at"`
	UpdatedAt      time.Time      `json:"updated_at"`
}

func (h *AdminHandler) userInfoOf(u *store.User) userInfo {
	sp, resetAt := h.liveSpend(store.KindUser, u.UserID, u.Spend, u.BudgetResetAt)
	return userInfo{
		UserID:         u.UserID,
		UserEmail:      strPtr(u.UserEmail),
		UserAlias:      strPtr(u.UserAlias),
		UserRole:       u.UserRole,
		Spend:          sp.USD(),
		MaxBudget:      usd(u.MaxBudget),
		SoftBudget:     usd(u.SoftBudget),
		BudgetDuration: strPtr(u.BudgetDuration),
		BudgetResetAt:  resetAt,
		Models:         nonNilModels(u.Models),
		Metadata:       nonNilMeta(u.Metadata),
		Teams:          []string{},
		CreatedAt:      u.CreatedAt,
		UpdatedAt:      u.UpdatedAt,
	}
}
