package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/templates"
)

// Lifecycle emails (issue 5). These hooks are called by the admin routes
// after the change is committed; they return warnings for the response and
// never fail the admin call: the user or key exists whatever happens to the
// email, and a client that retried the call on an email error would create
// a second user or rotate the key twice.

// invitationTTL is how long an invitation link works: LiteLLM's 7 days. A
// constant rather than a Caddyfile option: nobody has asked to change it,
// and the expiry is stored per invitation, so making it configurable later
// does not affect links already sent.
const invitationTTL = 7 * 24 * time.Hour

// notifyTimeout bounds the store writes behind one notification (invitation
// row, outbox row). They run detached from the request's context: the
// change is committed, so its email must be queued even if the client has
// already hung up.
const notifyTimeout = 10 * time.Second

func notifyContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
}

// notifyUserCreated sends the invitation email per LiteLLM's three-way
// send_invite_email rule: true sends if the user has an email, false never
// sends, absent sends if a real email backend is configured and the user has
// an email. The invitation never carries the auto-created key (that is
// shown once, in the response): it links to an invitation id that the
// dashboard resolves.
func (h *AdminHandler) notifyUserCreated(ctx context.Context, u *store.User, k *store.Key, plainKey string, sendInvite *bool) []string {
	if sendInvite != nil && !*sendInvite {
		return nil
	}
	explicit := sendInvite != nil
	if !explicit && !h.app.emailConfigured() {
		// LiteLLM's "email sending not enabled": skipped silently, the
		// caller did not ask for an email.
		return nil
	}
	if u.UserEmail == "" {
		return []string{"user has no email; no invitation sent"}
	}
	ctx, cancel := notifyContext(ctx)
	defer cancel()
	now := h.now().UTC()
	inv := &store.Invitation{
		ID:        newID(),
		UserID:    u.UserID,
		CreatedAt: now,
		ExpiresAt: now.Add(invitationTTL),
	}
	if err := h.state.store.CreateInvitation(ctx, inv); err != nil {
		h.logger.Error("storing invitation; no invitation sent", zap.String("user_id", u.UserID), zap.Error(err))
		return []string{"invitation could not be stored; no invitation sent (see the gateway log)"}
	}
	r := h.app.renderer
	rendered, err := r.Invitation(templates.InvitationData{
		RecipientEmail: u.UserEmail,
		InvitationLink: r.InvitationLink(inv.ID),
		ExpiresAt:      inv.ExpiresAt,
	})
	if err != nil {
		return h.notifyFailed(templates.NameInvitation, u.UserID, "rendering", err)
	}
	return h.send(ctx, explicit, mailer.Message{
		Kind:           templates.NameInvitation,
		To:             []string{u.UserEmail},
		Subject:        rendered.Subject,
		HTML:           rendered.HTML,
		Text:           rendered.Text,
		IdempotencyKey: "invitation:" + inv.ID,
		Sensitive:      false, // the link, not the key
	}, u.UserID)
}

// notifyKeyCreated sends the key-created email when send_invite_email is
// true (LiteLLM sends it only on request), to the email of the key's user.
func (h *AdminHandler) notifyKeyCreated(ctx context.Context, k *store.Key, plainKey string, sendInvite *bool) []string {
	if sendInvite == nil || !*sendInvite {
		return nil
	}
	ctx, cancel := notifyContext(ctx)
	defer cancel()
	to, warn := h.keyRecipient(ctx, k, "key-created")
	if to == "" {
		return warn
	}
	rendered, err := h.app.renderer.KeyCreated(templates.KeyData{
		RecipientEmail: to,
		Key:            plainKey,
		KeyAlias:       k.KeyAlias,
		MaxBudget:      k.MaxBudget,
		UserID:         k.UserID,
	})
	if err != nil {
		return h.notifyFailed(templates.NameKeyCreated, k.UserID, "rendering", err)
	}
	return h.send(ctx, true, mailer.Message{
		Kind:    templates.NameKeyCreated,
		To:      []string{to},
		Subject: rendered.Subject,
		HTML:    rendered.HTML,
		Text:    rendered.Text,
		// One key, one created email, whatever retries happen.
		IdempotencyKey: "key_created:" + k.ID,
		Sensitive:      h.app.renderer.Settings().IncludeAPIKey,
	}, k.UserID)
}

// notifyKeyRotated sends the key-rotated security notice whenever a real
// email backend is configured (LiteLLM has no request flag for it). With no
// backend it is skipped silently, as in LiteLLM: nobody asked for an email.
func (h *AdminHandler) notifyKeyRotated(ctx context.Context, k *store.Key, plainKey string) []string {
	if !h.app.emailConfigured() {
		return nil
	}
	ctx, cancel := notifyContext(ctx)
	defer cancel()
	to, warn := h.keyRecipient(ctx, k, "key-rotated")
	if to == "" {
		return warn
	}
	rendered, err := h.app.renderer.KeyRotated(templates.KeyRotatedData{
		RecipientEmail: to,
		Key:            plainKey,
		KeyAlias:       k.KeyAlias,
		MaxBudget:      k.MaxBudget,
		UserID:         k.UserID,
		RotatedAt:      h.now().UTC(),
	})
	if err != nil {
		return h.notifyFailed(templates.NameKeyRotated, k.UserID, "rendering", err)
	}
	return h.send(ctx, true, mailer.Message{
		Kind:    templates.NameKeyRotated,
		To:      []string{to},
		Subject: rendered.Subject,
		HTML:    rendered.HTML,
		Text:    rendered.Text,
		// One email per rotation: the new token identifies it. Hashed again
		// so the outbox and the Message-ID do not carry the token itself.
		IdempotencyKey: "key_rotated:" + k.ID + ":" + shortHash(k.Token),
		Sensitive:      h.app.renderer.Settings().IncludeAPIKey,
	}, k.UserID)
}

// keyRecipient finds the email of a key's user; when there is none it
// returns "" and the warning that says why.
func (h *AdminHandler) keyRecipient(ctx context.Context, k *store.Key, what string) (string, []string) {
	if k.UserID == "" {
		return "", []string{"key has no user_id; no " + what + " email sent"}
	}
	u, err := h.state.store.GetUser(ctx, k.UserID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", []string{"user " + k.UserID + " of the key does not exist; no " + what + " email sent"}
	case err != nil:
		h.logger.Error("looking up the key's user for an email", zap.String("user_id", k.UserID), zap.String("email", what), zap.Error(err))
		return "", []string{"could not look up user " + k.UserID + "; no " + what + " email sent (see the gateway log)"}
	case u.UserEmail == "":
		return "", []string{"user " + k.UserID + " has no email; no " + what + " email sent"}
	}
	return u.UserEmail, nil
}

// send commits m to the outbox. explicit says the caller asked for the
// email (send_invite_email true, or a rotation): with the log backend it
// then gets a warning that nothing will be delivered.
func (h *AdminHandler) send(ctx context.Context, explicit bool, m mailer.Message, userID string) []string {
	if _, err := h.app.enqueue(ctx, m); err != nil {
		return h.notifyFailed(m.Kind, userID, "queueing", err)
	}
	if explicit && !h.app.emailConfigured() {
		return []string{"no email backend is configured (email log): the " + m.Kind + " email was written to the gateway log, not delivered"}
	}
	return nil
}

// notifyFailed logs a notification that could not be queued and returns the
// warning for the admin response (without the cause, which may hold
// internals; it is in the log).
func (h *AdminHandler) notifyFailed(kind, userID, stage string, err error) []string {
	h.logger.Error("lifecycle email not queued", zap.String("kind", kind), zap.String("user_id", userID), zap.String("stage", stage), zap.Error(err))
	return []string{"the " + kind + " email could not be queued (" + stage + " failed; see the gateway log)"}
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// invitationInfo is the answer of GET /invitation/info.
type invitationInfo struct {
	InvitationID string     `json:"invitation_id"`
	UserID       string     `json:"user_id"`
	UserEmail    *string    `json:"user_email"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	AcceptedAt   *time.Time `json:"accepted_at"`
	Expired      bool       `json:"expired"`
}

// registerInvitationRoutes adds /invitation/* routes. The browser page the
// link opens (/ui?invitation_id=) belongs to the web UI.
func (h *AdminHandler) registerInvitationRoutes(mux *http.ServeMux) {
	mux.Handle("GET /invitation/info", h.guard(h.invitationInfo))
}

// invitationInfo serves GET /invitation/info?invitation_id=<id>: the user an
// invitation belongs to and whether it can still be used.
func (h *AdminHandler) invitationInfo(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.URL.Query().Get("invitation_id"))
	if id == "" {
		writeErr(w, h, &badRequest{"invitation_id", "invitation_id is required"})
		return
	}
	inv, err := h.state.store.GetInvitation(r.Context(), id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, errNotFound, "Invitation not found", "invitation_id")
			return
		}
		writeErr(w, h, err)
		return
	}
	out := invitationInfo{
		InvitationID: inv.ID,
		UserID:       inv.UserID,
		CreatedAt:    inv.CreatedAt.UTC(),
		ExpiresAt:    inv.ExpiresAt.UTC(),
		AcceptedAt:   inv.AcceptedAt,
		Expired:      !h.now().Before(inv.ExpiresAt),
	}
	// The user may have been deleted since; the invitation still answers.
	if u, err := h.state.store.GetUser(r.Context(), inv.UserID); err == nil {
		out.UserEmail = strPtr(u.UserEmail)
	} else if !errors.Is(err, store.ErrNotFound) {
		writeErr(w, h, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
