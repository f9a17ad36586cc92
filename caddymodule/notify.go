package caddymodule

import (
	"context"
	"net/http"

	"github.com/llmspend/llmspend/store"
)

// Lifecycle emails (issue 5). These hooks are called by the admin routes
// after the change is committed; they return warnings for the response and
// never fail the admin call.

// notifyUserCreated sends the invitation email per LiteLLM's three-way
// send_invite_email rule.
func (h *AdminHandler) notifyUserCreated(ctx context.Context, u *store.User, k *store.Key, plainKey string, sendInvite *bool) []string {
	return nil
}

// notifyKeyCreated sends the key-created email when send_invite_email is true.
func (h *AdminHandler) notifyKeyCreated(ctx context.Context, k *store.Key, plainKey string, sendInvite *bool) []string {
	return nil
}

// notifyKeyRotated sends the key-rotated email when email is configured.
func (h *AdminHandler) notifyKeyRotated(ctx context.Context, k *store.Key, plainKey string) []string {
	return nil
}

// registerInvitationRoutes adds /invitation/* routes.
func (h *AdminHandler) registerInvitationRoutes(mux *http.ServeMux) {}
