package caddymodule

import "net/http"

// Web UI (issue 9).

// uiSessionOK reports whether r carries a valid UI session and CSRF token.
func (h *AdminHandler) uiSessionOK(r *http.Request) bool { return false }

// registerUIRoutes adds /ui routes.
func (h *AdminHandler) registerUIRoutes(mux *http.ServeMux) {}
