package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types are part of the API: clients and LiteLLM SDKs switch on them.
const (
	errAuth          = "auth_error"
	errModelDenied   = "key_model_access_denied"
	errBudget        = "budget_exceeded"
	errInvalid       = "invalid_request_error"
	errNotFound      = "not_found_error"
	errConflict      = "conflict_error"
	errInternal      = "internal_server_error"
	errNotConfigured = "not_configured_error"
	errRateLimited   = "rate_limit_error"
)

// apiError is the OpenAI-shaped error body LiteLLM returns:
// {"error":{"message":"...","type":"...","param":null,"code":"401"}}.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// writeError writes an OpenAI-shaped JSON error. param "" is written as null.
func writeError(w http.ResponseWriter, status int, typ, msg, param string) {
	e := apiError{Message: msg, Type: typ, Code: strconv.Itoa(status)}
	if param != "" {
		e.Param = &param
	}
	body, _ := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
