package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// The invitation landing page: /ui?invitation_id=<id>, the link of the
// invitation email. No master key and no session: the id is the secret.
// The invited user sees what they were given and reveals a key for
// themselves, once; that consumes the invitation.

type uiInviteData struct {
	ID        string
	CSRF      string
	UserID    string
	Email     string
	Alias     string
	Budget    *money.Pico
	Duration  string
	Models    []string
	ExpiresAt time.Time
	// After the key is created:
	Key     string
	BaseURL string
}

// inviteCSRF binds a form token to the invitation id, so the accept form
// cannot be posted from another site even by someone holding the link.
func (h *AdminHandler) inviteCSRF(id string) string {
	key := h.uiKey()
	if key == nil {
		return ""
	}
	return b64(uiMAC(key, "invitation", id))
}

// invitationState loads the invitation and its user, or renders the page
// that explains why it cannot be used and returns nil.
func (h *AdminHandler) invitationState(w http.ResponseWriter, r *http.Request, id string) (*store.Invitation, *store.User) {
	if h.app.MasterKey == "" {
		h.uiMessage(w, r, http.StatusServiceUnavailable, "Invitations are unavailable",
			"This gateway's admin features are turned off (no master key is set). Ask your administrator.", "", "")
		return nil, nil
	}
	inv, err := h.state.store.GetInvitation(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		h.uiMessage(w, r, http.StatusNotFound, "This invitation link is not valid",
			"Check that you opened the whole link from your invitation email. If it still does not work, ask your administrator for a new invitation.", "", "")
		return nil, nil
	}
	if err != nil {
		h.logger.Error("loading invitation", zap.Error(err))
		h.uiMessage(w, r, http.StatusInternalServerError, "Something went wrong",
			"The invitation could not be loaded right now. Please try again in a minute.", "", "")
		return nil, nil
	}
	if inv.AcceptedAt != nil {
		h.uiMessage(w, r, http.StatusGone, "This invitation has already been used",
			"A key was created from this invitation on "+inv.AcceptedAt.UTC().Format("Jan 2, 2006 at 15:04 UTC")+
				". Keys are shown only once; if you lost yours, ask your administrator to regenerate it.", "", "")
		return nil, nil
	}
	if !inv.ExpiresAt.IsZero() && !h.now().Before(inv.ExpiresAt) {
		h.uiMessage(w, r, http.StatusGone, "This invitation has expired",
			"It expired on "+inv.ExpiresAt.UTC().Format("Jan 2, 2006 at 15:04 UTC")+". Ask your administrator to send you a new one.", "", "")
		return nil, nil
	}
	u, err := h.state.store.GetUser(r.Context(), inv.UserID)
	if err != nil {
		h.uiMessage(w, r, http.StatusGone, "This invitation is no longer valid",
			"The account it was for no longer exists. Ask your administrator for a new invitation.", "", "")
		return nil, nil
	}
	return inv, u
}

func inviteData(inv *store.Invitation, u *store.User) uiInviteData {
	return uiInviteData{
		ID: inv.ID, UserID: u.UserID, Email: u.UserEmail, Alias: u.UserAlias, Budget: u.MaxBudget,
		Duration: u.BudgetDuration, Models: u.Models, ExpiresAt: inv.ExpiresAt,
	}
}

func (h *AdminHandler) uiInvitation(w http.ResponseWriter, r *http.Request, id string) {
	inv, u := h.invitationState(w, r, id)
	if inv == nil {
		return
	}
	d := inviteData(inv, u)
	d.CSRF = h.inviteCSRF(inv.ID)
	h.render(w, http.StatusOK, "invite", pageData{Title: "Welcome", Data: d})
}

// uiInvitationAccept serves POST /ui/invitation: it consumes the invitation
// and creates a key for its user through the same code as /key/generate.
func (h *AdminHandler) uiInvitationAccept(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	id := r.PostFormValue("invitation_id")
	if id == "" || !formCSRFOK(r, h.inviteCSRF(id)) {
		h.uiMessage(w, r, http.StatusForbidden, "Request refused",
			"This form was stale or sent from another site. Open the link from your invitation email again.", "", "")
		return
	}
	inv, u := h.invitationState(w, r, id)
	if inv == nil {
		return
	}
	now := h.now().UTC()
	// Build first, so nothing is consumed when the key cannot be made.
	k, plain, err := h.buildKey(&generateKeyRequest{UserID: &u.UserID, Models: u.Models}, now)
	if err != nil {
		h.logger.Error("building key for invitation", zap.Error(err))
		h.uiMessage(w, r, http.StatusInternalServerError, "Something went wrong", "Your key could not be created. Please try again.", "", "")
		return
	}
	// Accepting is the one-winner step: of two concurrent clicks, one gets a key.
	if err := h.state.store.AcceptInvitation(r.Context(), inv.ID, now); err != nil {
		if errors.Is(err, store.ErrConflict) {
			h.uiMessage(w, r, http.StatusGone, "This invitation has already been used",
				"A key was already created from this invitation. Keys are shown only once; if you lost yours, ask your administrator to regenerate it.", "", "")
			return
		}
		h.logger.Error("accepting invitation", zap.Error(err))
		h.uiMessage(w, r, http.StatusInternalServerError, "Something went wrong", "Your key could not be created. Please try again.", "", "")
		return
	}
	if err := h.state.store.CreateKey(r.Context(), k); err != nil {
		h.logger.Error("creating key for accepted invitation", zap.String("user_id", u.UserID), zap.Error(err))
		h.uiMessage(w, r, http.StatusInternalServerError, "Something went wrong",
			"The invitation was accepted but the key could not be created. Ask your administrator to create a key for you.", "", "")
		return
	}
	h.keyChanged(k)
	h.logger.Info("invitation accepted", zap.String("user_id", u.UserID), zap.String("key", k.KeyName))
	d := inviteData(inv, u)
	d.Key = plain
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	d.BaseURL = scheme + "://" + strings.TrimSpace(r.Host)
	h.render(w, http.StatusOK, "invite", pageData{Title: "Your API key", Data: d})
}
