package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/templates"
)

// EmailConfig selects and configures the email backend. Every field
// overrides the LiteLLM environment variable of the same meaning (SMTP_*,
// RESEND_*, SENDGRID_*); empty fields keep the environment's value.
type EmailConfig struct {
	// Backend is smtp, resend, sendgrid or log. Empty: SMTP when SMTP_HOST
	// is set, else Resend when RESEND_API_KEY is set, else SendGrid when
	// SENDGRID_API_KEY is set, else log.
	Backend string `json:"backend,omitempty"`
	// From overrides the backend's sender address (may carry a display name).
	From string `json:"from,omitempty"`

	SMTPHost     string `json:"smtp_host,omitempty"`
	SMTPPort     int    `json:"smtp_port,omitempty"`
	SMTPTLS      string `json:"smtp_tls,omitempty"`
	SMTPUsername string `json:"smtp_username,omitempty"`
	SMTPPassword string `json:"smtp_password,omitempty"`

	// APIKey is the Resend or SendGrid API key (whichever backend is active).
	APIKey string `json:"api_key,omitempty"`
	// BaseURL overrides the Resend or SendGrid API base URL.
	BaseURL string `json:"base_url,omitempty"`

	// Workers is the number of concurrent sends. Default: 4.
	Workers int `json:"workers,omitempty"`
	// QueueLen bounds the in-memory queue in front of the workers; a full
	// queue never loses mail (it is in the outbox). Default: 1024.
	QueueLen int `json:"queue_len,omitempty"`
	// MaxAttempts before a transient failure is final. Default: 8.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BaseBackoff is the first retry delay (exponential, full jitter). Default: 2s.
	BaseBackoff caddy.Duration `json:"base_backoff,omitempty"`
	// DrainTimeout bounds how long stop or reload waits for in-flight
	// sends; the rest stays in the outbox. Default: 5s.
	DrainTimeout caddy.Duration `json:"drain_timeout,omitempty"`
}

// TemplateConfig customises the emails; fields override the EMAIL_* and
// PROXY_BASE_URL environment variables.
type TemplateConfig struct {
	Dir               string `json:"dir,omitempty"`
	LogoURL           string `json:"logo_url,omitempty"`
	SupportContact    string `json:"support_contact,omitempty"`
	Signature         string `json:"signature,omitempty"`
	CompanyName       string `json:"company_name,omitempty"`
	BaseURL           string `json:"base_url,omitempty"`
	IncludeAPIKey     *bool  `json:"include_api_key,omitempty"`
	SubjectInvitation string `json:"subject_invitation,omitempty"`
	SubjectKeyCreated string `json:"subject_key_created,omitempty"`
	SubjectKeyRotated string `json:"subject_key_rotated,omitempty"`
}

// expand resolves Caddy's global placeholders ({env.X}, ...) but leaves
// unknown ones alone: email subjects use {event_message} and {company_name}.
func expand(repl *caddy.Replacer, s string) string {
	return strings.TrimSpace(repl.ReplaceKnown(s, ""))
}

// mailerConfig merges the environment with the Caddyfile (the Caddyfile wins).
func (a *App) mailerConfig(getenv func(string) string) mailer.Config {
	c := mailer.ConfigFromEnv(getenv)
	e := a.Email
	if e == nil {
		return c
	}
	repl := caddy.NewReplacer()
	set := func(dst *string, v string) {
		if v = expand(repl, v); v != "" {
			*dst = v
		}
	}
	set(&c.Backend, e.Backend)
	set(&c.From, e.From)
	set(&c.SMTP.Host, e.SMTPHost)
	set(&c.SMTP.TLS, e.SMTPTLS)
	set(&c.SMTP.Username, e.SMTPUsername)
	if e.SMTPPassword != "" {
		c.SMTP.Password = repl.ReplaceKnown(e.SMTPPassword, "")
	}
	if e.SMTPPort != 0 {
		c.SMTP.Port = e.SMTPPort
	}
	switch c.ActiveBackend() {
	case mailer.BackendResend:
		set(&c.Resend.APIKey, e.APIKey)
		set(&c.Resend.BaseURL, e.BaseURL)
	case mailer.BackendSendGrid:
		set(&c.SendGrid.APIKey, e.APIKey)
		set(&c.SendGrid.BaseURL, e.BaseURL)
	}
	return c
}

// templateSettings merges the environment with the Caddyfile (the Caddyfile wins).
func (a *App) templateSettings(getenv func(string) string) templates.Settings {
	s := templates.SettingsFromEnv(getenv)
	t := a.Templates
	if t == nil {
		return s
	}
	repl := caddy.NewReplacer()
	set := func(dst *string, v string) {
		if v = expand(repl, v); v != "" {
			*dst = v
		}
	}
	set(&s.TemplateDir, t.Dir)
	set(&s.LogoURL, t.LogoURL)
	set(&s.SupportContact, t.SupportContact)
	set(&s.Signature, t.Signature)
	set(&s.CompanyName, t.CompanyName)
	set(&s.BaseURL, t.BaseURL)
	set(&s.SubjectInvitation, t.SubjectInvitation)
	set(&s.SubjectKeyCreated, t.SubjectKeyCreated)
	set(&s.SubjectKeyRotated, t.SubjectKeyRotated)
	if t.IncludeAPIKey != nil {
		s.IncludeAPIKey = *t.IncludeAPIKey
	}
	return s
}

// mailers holds running mailer pools, keyed by store and mailer
// configuration: a reload with the same email settings keeps the pool (and
// its in-flight sends); changed settings start a new pool on the same
// outbox while the old one drains (outbox leases keep them from sending a
// message twice).
var mailers = caddy.NewUsagePool()

type mailerKey struct {
	store  string
	config string // JSON of the effective configuration
}

type mailerEntry struct {
	key    mailerKey
	pool   *mailer.Pool
	drain  time.Duration
	logger *zap.Logger
}

func (m *mailerEntry) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.drain)
	defer cancel()
	return m.pool.Stop(ctx)
}

// provisionEmail builds the sender, the renderer and the pool.
func (a *App) provisionEmail(getenv func(string) string) error {
	mc := a.mailerConfig(getenv)
	if err := mc.Validate(); err != nil {
		return fmt.Errorf("email: %w", err)
	}
	r, err := templates.New(a.templateSettings(getenv))
	if err != nil {
		return fmt.Errorf("email templates: %w", err)
	}
	a.renderer = r
	a.mailConfig = mc

	e := a.Email
	if e == nil {
		e = &EmailConfig{}
	}
	drain := time.Duration(e.DrainTimeout)
	if drain <= 0 {
		drain = 5 * time.Second
	}
	cfgJSON, _ := json.Marshal(struct {
		M mailer.Config
		E *EmailConfig
	}{mc, e})
	key := mailerKey{store: a.Store, config: string(cfgJSON)}
	v, _, err := mailers.LoadOrNew(key, func() (caddy.Destructor, error) {
		sender, err := mailer.NewSender(mc, a.logger.Named("mailer"))
		if err != nil {
			return nil, err
		}
		pool := mailer.NewPool(mailer.PoolConfig{
			Outbox:      a.state.store,
			Sender:      sender,
			Workers:     e.Workers,
			QueueLen:    e.QueueLen,
			MaxAttempts: e.MaxAttempts,
			BaseBackoff: time.Duration(e.BaseBackoff),
			Logger:      a.logger.Named("mailer"),
			Metrics:     gatewayEmailMetrics(),
		})
		if err := pool.Start(); err != nil {
			return nil, err
		}
		return &mailerEntry{key: key, pool: pool, drain: drain, logger: a.logger}, nil
	})
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	a.mail = v.(*mailerEntry)
	a.logger.Info("email backend", zap.String("backend", mc.ActiveBackend()), zap.Bool("configured", mc.Configured()))
	return nil
}

func (a *App) cleanupEmail() error {
	if a.mail == nil {
		return nil
	}
	_, err := mailers.Delete(a.mail.key)
	return err
}

// emailConfigured is LiteLLM's "email sending enabled": a real backend.
func (a *App) emailConfigured() bool { return a.mailConfig.Configured() }

// enqueue commits a message to the outbox (before the caller returns) and
// wakes the pool.
func (a *App) enqueue(ctx context.Context, m mailer.Message) (int64, error) {
	return a.mail.pool.Enqueue(ctx, m)
}
