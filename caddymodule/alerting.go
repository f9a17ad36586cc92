package caddymodule

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// Budget alert emails (issue 6).

// AlertsConfig enables budget alerts (`alerts email`).
type AlertsConfig struct {
	// Email turns on budget alert emails.
	Email bool `json:"email,omitempty"`
}

// validateKeyMetadata checks metadata.max_budget_alert_emails.
func validateKeyMetadata(meta map[string]any) error { return nil }

// parseAlerts parses the alerts option.
func (a *App) parseAlerts(d *caddyfile.Dispenser) error {
	return d.Errf("llm_spend: alerts are not available in this build yet")
}

func (a *App) provisionAlerts() error { return nil }

func (a *App) cleanupAlerts() error { return nil }
