package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/alerts"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

// Budget alert emails (issue 6, SPEC section 4).

// Environment variables of the alerts (LiteLLM's names).
const (
	envAlertPct = "EMAIL_BUDGET_ALERT_MAX_SPEND_ALERT_PERCENTAGE"
	envAlertTTL = "EMAIL_BUDGET_ALERT_TTL"
)

// AlertsConfig enables budget alerts (`alerts email`). Unset fields take
// the environment's value, then the default.
type AlertsConfig struct {
	// Email turns on budget alert emails.
	Email bool `json:"email,omitempty"`
	// MaxSpendAlertPercentage is the default max-budget alert point, a
	// fraction in (0, 1] (EMAIL_BUDGET_ALERT_MAX_SPEND_ALERT_PERCENTAGE,
	// default 0.8). Keys with metadata.max_budget_alert_emails use their
	// own thresholds instead.
	MaxSpendAlertPercentage *float64 `json:"max_spend_alert_percentage,omitempty"`
	// TTL: at most one email per key or user, alert type and threshold per
	// TTL and budget window (EMAIL_BUDGET_ALERT_TTL seconds, default 24h).
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Queue bounds the channel from the request path to the alert workers
	// (default 4096); a full channel spills into a list, never blocks.
	Queue int `json:"queue,omitempty"`
	// FailedSweep is how often the claims of alert emails that finally
	// failed are released, so the alert can fire again (default 30s).
	FailedSweep caddy.Duration `json:"failed_sweep,omitempty"`
}

// alertSettings is the effective configuration.
type alertSettings struct {
	pct   float64
	ttl   time.Duration
	queue int
	sweep time.Duration
}

// settings merges the environment with the Caddyfile (the Caddyfile wins)
// and validates; errors name the variable or option.
func (c *AlertsConfig) settings(getenv func(string) string) (alertSettings, error) {
	s := alertSettings{pct: 0.8, ttl: alerts.DefaultTTL, queue: alerts.DefaultQueue, sweep: alerts.DefaultSweepInterval}
	if v := strings.TrimSpace(getenv(envAlertPct)); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return s, fmt.Errorf("%s must be a number in (0, 1], e.g. 0.8; got %q", envAlertPct, v)
		}
		s.pct = f
	}
	if v := strings.TrimSpace(getenv(envAlertTTL)); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n > int64(100*365*24*time.Hour/time.Second) {
			return s, fmt.Errorf("%s must be a positive number of seconds, e.g. 86400; got %q", envAlertTTL, v)
		}
		s.ttl = time.Duration(n) * time.Second
	}
	if c.MaxSpendAlertPercentage != nil {
		f := *c.MaxSpendAlertPercentage
		if !(f > 0 && f <= 1) {
			return s, fmt.Errorf("alerts max_spend_alert_percentage must be in (0, 1], got %v", f)
		}
		s.pct = f
	}
	if c.TTL < 0 {
		return s, fmt.Errorf("alerts ttl must be positive, got %v", time.Duration(c.TTL))
	}
	if c.TTL > 0 {
		s.ttl = time.Duration(c.TTL)
	}
	if c.Queue < 0 {
		return s, fmt.Errorf("alerts queue must be positive, got %d", c.Queue)
	}
	if c.Queue > 0 {
		s.queue = c.Queue
	}
	if c.FailedSweep > 0 {
		s.sweep = time.Duration(c.FailedSweep)
	}
	return s, nil
}

// validateKeyMetadata checks metadata.max_budget_alert_emails: an object
// of whole percents 1..100 to a list of email addresses or a
// comma-separated string of them. Anything else is a 400 naming metadata.
func validateKeyMetadata(meta map[string]any) error {
	v, ok := meta[alerts.MetaAlertEmails]
	if !ok {
		return nil
	}
	if err := alerts.ValidateAlertEmails(v); err != nil {
		return &badRequest{"metadata", err.Error()}
	}
	return nil
}

// parseAlerts parses
//
//	alerts email {
//		max_spend_alert_percentage 0.8
//		ttl 24h
//		queue 4096
//		failed_sweep 30s
//	}
func (a *App) parseAlerts(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 1 || args[0] != "email" {
		return d.Errf("llm_spend: alerts takes one channel, email (e.g. `alerts email`), got %q", strings.Join(args, " "))
	}
	c := &AlertsConfig{Email: true}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "max_spend_alert_percentage":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f > 0 && f <= 1) {
				return d.Errf("llm_spend: alerts max_spend_alert_percentage must be a number in (0, 1], got %q", v)
			}
			c.MaxSpendAlertPercentage = &f
		case "ttl", "failed_sweep":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("llm_spend: alerts %s must be a positive duration, got %q", opt, v)
			}
			if opt == "ttl" {
				c.TTL = caddy.Duration(dur)
			} else {
				c.FailedSweep = caddy.Duration(dur)
			}
		case "queue":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("llm_spend: alerts queue must be a positive integer, got %q", v)
			}
			c.Queue = n
		default:
			return d.Errf("llm_spend: unrecognized alerts option '%s'", opt)
		}
	}
	a.Alerts = c
	return nil
}

// alerters maps each App to the alerter it installed (App's fields belong
// to app.go; this keeps the alerting state next to its code).
var alerters sync.Map // *App -> *installedAlerter

// installedAlerter is a config's alerter and what it replaced, so that a
// config that fails to load after provisioning can put the running
// config's alerter back.
type installedAlerter struct {
	al      *alerts.Alerter
	prev    spend.CrossingSink // the sink before (nil: none)
	prevPct int                // the ledger's alert percent before
}

// liveAlerter reports whether cs is the alerter of a config still loaded.
func liveAlerter(cs spend.CrossingSink) bool {
	live := false
	alerters.Range(func(_, v any) bool {
		if v.(*installedAlerter).al == cs {
			live = true
			return false
		}
		return true
	})
	return live
}

// alertDrain bounds how long a reload or stop waits for queued crossings
// to become claims and outbox messages.
const alertDrain = 5 * time.Second

// provisionAlerts builds the alerter when `alerts email` is set and makes
// it the ledger's sink. On a reload the new config provisions before the
// old one cleans up: the new alerter takes over at once, and the old one
// drains what it had and passes on what it could not handle.
func (a *App) provisionAlerts() error {
	if a.Alerts == nil || !a.Alerts.Email {
		return nil
	}
	s, err := a.Alerts.settings(os.Getenv)
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	st := a.state.store
	al, err := alerts.New(alerts.Config{
		Store:         st,
		Directory:     storeDirectory{st},
		Renderer:      a.renderer,
		Enqueue:       a.enqueue,
		TTL:           s.ttl,
		Queue:         s.queue,
		SweepInterval: s.sweep,
		Logger:        a.logger.Named("alerts"),
		Metrics:       gatewayAlertMetrics(),
	})
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	in := &installedAlerter{al: al, prevPct: a.state.ledger.MaxAlertPercent()}
	if p := a.state.sink.cur.Load(); p != nil {
		in.prev = *p
	}
	a.state.ledger.SetMaxAlertPct(s.pct)
	alerters.Store(a, in)
	a.state.sink.set(al)
	a.logger.Info("budget alert emails on", zap.Int("max_alert_percent", a.state.ledger.MaxAlertPercent()),
		zap.Duration("ttl", s.ttl), zap.Int("queue", s.queue))
	return nil
}

// cleanupAlerts detaches this config's alerter (only if it is still the
// ledger's sink: a newer config may have installed its own), drains it,
// and hands what it could not handle in time to the current sink. When
// this config never ran (its load failed after it provisioned), the
// running config's alerter, if any, is the sink again.
func (a *App) cleanupAlerts() error {
	v, ok := alerters.LoadAndDelete(a)
	if !ok {
		return nil
	}
	in := v.(*installedAlerter)
	al := in.al
	var restore spend.CrossingSink
	if in.prev != nil && liveAlerter(in.prev) {
		restore = in.prev
	}
	if a.state.sink.swapIf(al, restore) && restore != nil {
		a.state.ledger.SetMaxAlertPct(float64(in.prevPct) / 100)
	}
	ctx, cancel := context.WithTimeout(context.Background(), alertDrain)
	defer cancel()
	left := al.Stop(ctx)
	if len(left) == 0 {
		return nil
	}
	if a.state.sink.cur.Load() == nil {
		a.logger.Error("budget alerts dropped at shutdown: not handled within the drain deadline; they fire again on the account's next request after a restart",
			zap.Int("crossings", len(left)))
		return nil
	}
	for _, c := range left {
		a.state.sink.Crossing(c)
	}
	return nil
}

// swapIf replaces the sink with next (nil: none) if it is still cs; it
// reports whether it did.
func (s *sinkSwitch) swapIf(cs, next spend.CrossingSink) bool {
	var np *spend.CrossingSink
	if next != nil {
		np = &next
	}
	for {
		p := s.cur.Load()
		if p == nil || *p != cs {
			return false
		}
		if s.cur.CompareAndSwap(p, np) {
			return true
		}
	}
}

// storeDirectory resolves alert recipients from the store: a key's owner
// is its user's email; a user's is its own.
type storeDirectory struct{ st store.Store }

func (d storeDirectory) Entity(ctx context.Context, kind, id string) (alerts.Entity, error) {
	switch kind {
	case store.KindKey:
		k, err := d.st.GetKey(ctx, id)
		if err != nil {
			return alerts.Entity{}, err
		}
		e := alerts.Entity{KeyAlias: k.KeyAlias, Metadata: k.Metadata}
		if k.UserID != "" {
			u, err := d.st.GetUser(ctx, k.UserID)
			switch {
			case err == nil:
				e.Email = u.UserEmail
			case !errors.Is(err, store.ErrNotFound):
				return alerts.Entity{}, err
			}
		}
		return e, nil
	case store.KindUser:
		u, err := d.st.GetUser(ctx, id)
		if err != nil {
			return alerts.Entity{}, err
		}
		return alerts.Entity{Email: u.UserEmail, Metadata: u.Metadata}, nil
	}
	return alerts.Entity{}, store.ErrNotFound
}
