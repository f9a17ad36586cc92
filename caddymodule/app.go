package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/templates"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the llm_spend app: it owns the state the gateway's handlers share
// (store, key cache, ledger, mailer). Caddy builds a new App on every config
// load, so the state itself lives in a usage pool keyed by its configuration
// and survives `caddy reload`.
type App struct {
	// MasterKey guards the admin API (Authorization: Bearer <master key>).
	// While it is empty, every admin request is refused with an explanation.
	// Placeholders such as {env.MASTER_KEY} are expanded.
	MasterKey string `json:"master_key,omitempty"`

	// Store is where users, keys, spend and the email outbox live: a file
	// path for the embedded SQLite store, or a postgres:// URL. Default:
	// llmspend/llmspend.db under Caddy's data directory.
	Store string `json:"store,omitempty"`

	// AdminMaxBody limits admin request bodies. Default: 1 MiB.
	AdminMaxBody int64 `json:"admin_max_body,omitempty"`

	// MaxRequestBody limits gateway request bodies the handler reads to
	// find the model. Default: 32 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// PricesFile is a price table in LiteLLM's
	// model_prices_and_context_window.json format; its entries extend or
	// replace the embedded table.
	PricesFile string `json:"prices_file,omitempty"`

	// Prices sets per-model prices (USD per 1M tokens), over the table.
	Prices map[string]PriceConfig `json:"prices,omitempty"`

	// Email configures the email backend and delivery pool.
	Email *EmailConfig `json:"email,omitempty"`

	// Templates customises the emails.
	Templates *TemplateConfig `json:"templates,omitempty"`

	// Alerts configures budget alerts.
	Alerts *AlertsConfig `json:"alerts,omitempty"`

	// Redis is a redis:// URL: spend counters shared by several gateway
	// instances (with a postgres:// store).
	Redis string `json:"redis,omitempty"`

	// RedisOptions tunes the shared counters (prefix, batch interval).
	RedisOptions *RedisOptions `json:"redis_options,omitempty"`

	state      *sharedState
	logger     *zap.Logger
	prices     *spend.PriceTable
	renderer   *templates.Renderer
	mailConfig mailer.Config
	mail       *mailerEntry
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "llm_spend",
		New: func() caddy.Module { return new(App) },
	}
}

const (
	defaultAdminMaxBody   = 1 << 20
	defaultMaxRequestBody = 32 << 20
)

// Provision opens (or re-uses across a reload) the shared state.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	// Here as well as in the handler: a config with only the admin routes
	// still shows email, outbox and write-behind metrics.
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("llm_spend: registering metrics: %w", err)
	}
	repl := caddy.NewReplacer()
	a.MasterKey = strings.TrimSpace(repl.ReplaceAll(a.MasterKey, ""))
	a.Store = strings.TrimSpace(repl.ReplaceAll(a.Store, ""))
	if a.AdminMaxBody <= 0 {
		a.AdminMaxBody = defaultAdminMaxBody
	}
	if a.MaxRequestBody <= 0 {
		a.MaxRequestBody = defaultMaxRequestBody
	}
	prices, err := a.buildPrices()
	if err != nil {
		return fmt.Errorf("llm_spend: %w", err)
	}
	a.prices = prices
	if a.Store == "" {
		a.Store = filepath.Join(caddy.AppDataDir(), "llmspend", "llmspend.db")
	}
	st, err := loadSharedState(a.stateConfig(repl), a.logger)
	if err != nil {
		return fmt.Errorf("llm_spend: %w", err)
	}
	a.state = st
	// On error Caddy calls Cleanup, which releases what was acquired here.
	if err := a.provisionEmail(os.Getenv); err != nil {
		return fmt.Errorf("llm_spend: %w", err)
	}
	if err := a.provisionAlerts(); err != nil {
		return fmt.Errorf("llm_spend: %w", err)
	}
	if a.MasterKey == "" {
		a.logger.Warn("MASTER_KEY is not set: the admin API refuses every request until it is")
	}
	return nil
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if a.MasterKey != "" && len(a.MasterKey) < 8 {
		return fmt.Errorf("llm_spend: master_key must be at least 8 characters")
	}
	return nil
}

// Start implements caddy.App.
func (a *App) Start() error { return nil }

// Stop implements caddy.App. The shared state is flushed when the last
// config using it goes away (Cleanup), not on every reload.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's reference to the shared state; the last
// reference flushes spend, drains the mailer and closes the store.
func (a *App) Cleanup() error {
	if a.state == nil {
		return nil
	}
	// Alerts and the mailer go first: they work the store's outbox.
	alertErr := a.cleanupAlerts()
	mailErr := errors.Join(alertErr, a.cleanupEmail())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(mailErr, releaseSharedState(ctx, a.state))
}

// loadApp returns this config's llm_spend app for a handler. An app the
// config doesn't set up is created with its defaults, so a bare
// `llm_spend` directive runs on the embedded store. The app registers the
// metrics, so handlers need not.
func loadApp(ctx caddy.Context) (*App, error) {
	appIface, err := ctx.App("llm_spend")
	if err != nil {
		return nil, fmt.Errorf("loading llm_spend app: %w", err)
	}
	return appIface.(*App), nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
