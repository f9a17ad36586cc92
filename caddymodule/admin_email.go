package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/store"
)

// outboxMessage is an outbox row as the admin API shows it (no bodies:
// they may hold a plain key until sent).
type outboxMessage struct {
	ID            int64      `json:"id"`
	Kind          string     `json:"kind"`
	To            []string   `json:"to"`
	Subject       string     `json:"subject"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt time.Time  `json:"next_attempt_at"`
	LastError     string     `json:"last_error,omitempty"`
	ProviderID    string     `json:"provider_id,omitempty"`
	Backend       string     `json:"backend,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	SentAt        *time.Time `json:"sent_at,omitempty"`
}

func toOutboxMessage(m *store.OutboxMessage) outboxMessage {
	return outboxMessage{
		ID: m.ID, Kind: m.Kind, To: m.To, Subject: m.Subject, Status: m.Status, Attempts: m.Attempts,
		NextAttemptAt: m.NextAttemptAt, LastError: m.LastError, ProviderID: m.ProviderID, Backend: m.Backend,
		CreatedAt: m.CreatedAt, SentAt: m.SentAt,
	}
}

// emailOutbox serves GET /email/outbox?status=pending|sending|sent|failed&limit=N.
func (h *AdminHandler) emailOutbox(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	switch status {
	case "", store.StatusPending, store.StatusSending, store.StatusSent, store.StatusFailed:
	default:
		writeErr(w, h, &badRequest{"status", "status must be pending, sending, sent or failed"})
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeErr(w, h, &badRequest{"limit", "limit must be an integer between 1 and 1000"})
			return
		}
		limit = n
	}
	msgs, err := h.state.store.ListOutbox(r.Context(), status, limit)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	counts, err := h.state.store.OutboxCounts(r.Context())
	if err != nil {
		writeErr(w, h, err)
		return
	}
	out := make([]outboxMessage, 0, len(msgs))
	for i := range msgs {
		out = append(out, toOutboxMessage(&msgs[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"backend":    h.app.mailConfig.ActiveBackend(),
		"configured": h.app.emailConfigured(),
		"counts":     counts,
		"messages":   out,
	})
}

// emailRetry serves POST /email/outbox/{id}/retry: a failed message goes
// back to pending.
func (h *AdminHandler) emailRetry(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeErr(w, h, &badRequest{"id", "id must be a positive integer"})
		return
	}
	if err := h.state.store.Requeue(r.Context(), id, h.now()); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, http.StatusConflict, errConflict, "only failed messages without secrets in their body can be retried", "id")
			return
		}
		writeErr(w, h, err)
		return
	}
	m, err := h.state.store.GetMessage(r.Context(), id)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	writeJSON(w, http.StatusOK, toOutboxMessage(m))
}

type testEmailRequest struct {
	To string `json:"to"`
}

// emailTest serves POST /email/test {"to": "..."}: it sends a test message
// through the configured backend and reports the backend's answer.
func (h *AdminHandler) emailTest(w http.ResponseWriter, r *http.Request) {
	var req testEmailRequest
	if !decodeJSON(w, r, h.app.AdminMaxBody, &req) {
		return
	}
	req.To = strings.TrimSpace(req.To)
	if req.To == "" {
		writeErr(w, h, &badRequest{"to", "to is required"})
		return
	}
	backend := h.app.mailConfig.ActiveBackend()
	msg := mailer.Message{
		Kind:    "test",
		To:      []string{req.To},
		Subject: "llmspend: test email",
		Text:    "This is a test email from your llmspend gateway.\n\nBackend: " + backend + "\nSent: " + h.now().UTC().Format(time.RFC1123) + "\n",
		HTML:    "<p>This is a test email from your llmspend gateway.</p><p>Backend: <b>" + backend + "</b><br>Sent: " + h.now().UTC().Format(time.RFC1123) + "</p>",
	}
	if err := msg.Validate(); err != nil {
		writeErr(w, h, &badRequest{"to", err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	providerID, err := h.app.mail.pool.SendNow(ctx, msg)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{
			"ok":        false,
			"backend":   backend,
			"error":     err.Error(),
			"permanent": mailer.IsPermanent(err),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "backend": backend, "provider_response": providerID})
}

// emailPreview serves GET /email/preview/{template}?format=html|text:
// the template rendered with sample data, without sending.
func (h *AdminHandler) emailPreview(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("template")
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "html"
	}
	if format != "html" && format != "text" {
		writeErr(w, h, &badRequest{"format", "format must be html or text"})
		return
	}
	rendered, err := h.app.renderer.Preview(name, format)
	if err != nil {
		writeError(w, http.StatusNotFound, errNotFound, "no template "+strconv.Quote(name)+"; templates: "+strings.Join(h.app.renderer.Names(), ", "), "template")
		return
	}
	w.Header().Set("X-Email-Subject", rendered.Subject)
	if format == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(rendered.Text))
		return
	}
	// The preview is an email body, not a page of ours: no scripts run in it.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(rendered.HTML))
}
