package mailer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Backend names, as written after `email` in the Caddyfile.
const (
	BackendSMTP     = "smtp"
	BackendResend   = "resend"
	BackendSendGrid = "sendgrid"
	BackendLog      = "log"
)

// SMTP TLS modes (SMTPConfig.TLS). SMTP_TLS=True maps to TLSStartTLS and
// SMTP_TLS=False to TLSNone.
const (
	// TLSStartTLS requires STARTTLS: a server that does not offer it is an
	// error, never a plaintext fallback. Default, as in LiteLLM (SMTP_TLS
	// defaults to "True").
	TLSStartTLS = "starttls"
	// TLSImplicit dials TLS directly (SMTPS). Chosen automatically on port 465.
	TLSImplicit = "implicit"
	// TLSNone never encrypts (a relay on localhost or a trusted network).
	TLSNone = "none"
	// TLSOpportunistic uses STARTTLS when offered and plaintext otherwise.
	// Only by explicit choice (Caddyfile): it is open to downgrade.
	TLSOpportunistic = "opportunistic"
)

// Defaults.
const (
	DefaultSMTPPort        = 587
	DefaultResendBaseURL   = "https://api.resend.com"
	DefaultSendGridBaseURL = "https://api.sendgrid.com"
	DefaultDialTimeout     = 10 * time.Second
	DefaultSendTimeout     = 30 * time.Second
)

// SMTPConfig configures the SMTP backend (go-mail).
type SMTPConfig struct {
	Host string // SMTP_HOST
	// Port is SMTP_PORT; 0 means 587. -1 records an unparsable SMTP_PORT
	// so that Validate can name it.
	Port int
	// TLS is SMTP_TLS as given ("True", "False") or a mode name
	// (starttls, implicit, none, opportunistic). Empty means "True", except
	// on port 465 where it means implicit TLS. See EffectiveTLS.
	TLS         string
	Username    string // SMTP_USERNAME; authentication happens only when set
	Password    string // SMTP_PASSWORD
	SenderEmail string // SMTP_SENDER_EMAIL
	// HELO is the EHLO name; default os.Hostname.
	HELO string
	// DialTimeout bounds the TCP (and implicit TLS) connect; default 10s.
	DialTimeout time.Duration
	// Timeout bounds the whole SMTP session of one message; default 30s.
	Timeout time.Duration
	// TLSConfig overrides the TLS client configuration (custom RootCAs, in
	// tests or for a private relay). ServerName defaults to Host.
	TLSConfig *tls.Config
	// AllowInsecureAuth permits sending the password over an unencrypted
	// connection to a host other than localhost. Off by default: with
	// SMTP_TLS=False and a remote server, AUTH fails instead of leaking the
	// password.
	AllowInsecureAuth bool
}

// ResendConfig configures the Resend backend (resend-go).
type ResendConfig struct {
	APIKey      string // RESEND_API_KEY
	SenderEmail string // RESEND_SENDER_EMAIL
	BaseURL     string // RESEND_BASE_URL, default https://api.resend.com
	// Timeout bounds one HTTP request; default 30s.
	Timeout time.Duration
	// HTTPClient replaces the default client (its Transport is wrapped).
	HTTPClient *http.Client
}

// SendGridConfig configures the SendGrid backend (sendgrid-go).
type SendGridConfig struct {
	APIKey      string // SENDGRID_API_KEY
	SenderEmail string // SENDGRID_SENDER_EMAIL
	BaseURL     string // SENDGRID_BASE_URL, default https://api.sendgrid.com
	Timeout     time.Duration
	HTTPClient  *http.Client
}

// Config selects and configures the email backend. It is plain data:
// ConfigFromEnv fills it from the environment, then the Caddy adapter
// overwrites what the Caddyfile sets.
type Config struct {
	// Backend is smtp, resend, sendgrid or log; empty chooses automatically
	// (see ActiveBackend).
	Backend string
	// From, when set, is the sender of every backend and takes precedence
	// over the backend's own *_SENDER_EMAIL. It may carry a display name
	// ("LiteLLM <notifications@example.com>").
	From     string
	SMTP     SMTPConfig
	Resend   ResendConfig
	SendGrid SendGridConfig
}

// ConfigFromEnv reads the LiteLLM-compatible variables SMTP_HOST,
// SMTP_PORT, SMTP_TLS, SMTP_USERNAME, SMTP_PASSWORD, SMTP_SENDER_EMAIL,
// RESEND_API_KEY, RESEND_SENDER_EMAIL, RESEND_BASE_URL, SENDGRID_API_KEY,
// SENDGRID_SENDER_EMAIL and SENDGRID_BASE_URL. It never fails: problems are
// reported by Validate, after the Caddyfile had its say.
func ConfigFromEnv(getenv func(string) string) Config {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		SMTP: SMTPConfig{
			Host:        get("SMTP_HOST"),
			TLS:         get("SMTP_TLS"),
			Username:    get("SMTP_USERNAME"),
			Password:    getenv("SMTP_PASSWORD"), // a password may end in a space
			SenderEmail: get("SMTP_SENDER_EMAIL"),
		},
		Resend: ResendConfig{
			APIKey:      get("RESEND_API_KEY"),
			SenderEmail: get("RESEND_SENDER_EMAIL"),
			BaseURL:     get("RESEND_BASE_URL"),
		},
		SendGrid: SendGridConfig{
			APIKey:      get("SENDGRID_API_KEY"),
			SenderEmail: get("SENDGRID_SENDER_EMAIL"),
			BaseURL:     get("SENDGRID_BASE_URL"),
		},
	}
	if p := get("SMTP_PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			n = -1
		}
		c.SMTP.Port = n
	}
	return c
}

// ActiveBackend returns the backend in use: Backend when set, else SMTP when
// SMTP_HOST is set, else Resend when RESEND_API_KEY is set, else SendGrid
// when SENDGRID_API_KEY is set, else log.
func (c Config) ActiveBackend() string {
	if b := strings.ToLower(strings.TrimSpace(c.Backend)); b != "" {
		return b
	}
	switch {
	case c.SMTP.Host != "":
		return BackendSMTP
	case c.Resend.APIKey != "":
		return BackendResend
	case c.SendGrid.APIKey != "":
		return BackendSendGrid
	default:
		return BackendLog
	}
}

// Configured reports whether a real backend is active (not log). LiteLLM's
// "email configured" rules (e.g. whether an invitation email is sent) use it.
func (c Config) Configured() bool { return c.ActiveBackend() != BackendLog }

// Sender returns the From address of the active backend: Config.From when
// set, else the backend's *_SENDER_EMAIL.
func (c Config) Sender() string {
	if c.From != "" {
		return c.From
	}
	switch c.ActiveBackend() {
	case BackendSMTP:
		return c.SMTP.SenderEmail
	case BackendResend:
		return c.Resend.SenderEmail
	case BackendSendGrid:
		return c.SendGrid.SenderEmail
	}
	return defaultLogFrom
}

const defaultLogFrom = "llmspend@localhost"

// EffectiveTLS resolves SMTPConfig.TLS and the port into one of the TLS*
// modes: "True"/empty → STARTTLS required (implicit TLS on port 465),
// "False" → none.
func (s SMTPConfig) EffectiveTLS() (string, error) {
	switch strings.ToLower(strings.TrimSpace(s.TLS)) {
	case "", "true", "1", "yes", "on":
		if s.port() == 465 {
			return TLSImplicit, nil
		}
		return TLSStartTLS, nil
	case "false", "0", "no", "off", TLSNone:
		return TLSNone, nil
	case TLSStartTLS:
		return TLSStartTLS, nil
	case TLSImplicit, "ssl", "smtps":
		return TLSImplicit, nil
	case TLSOpportunistic:
		return TLSOpportunistic, nil
	}
	return "", fmt.Errorf("SMTP_TLS: unknown value %q (want True, False, starttls, implicit, none or opportunistic)", s.TLS)
}

func (s SMTPConfig) port() int {
	if s.Port == 0 {
		return DefaultSMTPPort
	}
	return s.Port
}

// Validate checks the active backend's settings. A missing sender address
// is an error naming the variable, e.g. "SMTP_SENDER_EMAIL is required when
// the smtp email backend is active".
func (c Config) Validate() error {
	b := c.ActiveBackend()
	var errs []error
	need := func(v, name string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s is required when the %s email backend is active", name, b))
		}
	}
	sender := func(v, name string) {
		if c.From != "" {
			if _, err := ParseAddress("From", c.From); err != nil {
				errs = append(errs, fmt.Errorf("email from address: %w", err))
			}
			return
		}
		need(v, name)
		if v != "" {
			if _, err := ParseAddress(name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	switch b {
	case BackendSMTP:
		need(c.SMTP.Host, "SMTP_HOST")
		if err := checkHeader("SMTP_HOST", c.SMTP.Host); err != nil {
			errs = append(errs, err)
		}
		if c.SMTP.Port < 0 || c.SMTP.Port > 65535 {
			errs = append(errs, errors.New("SMTP_PORT must be a port number between 1 and 65535"))
		}
		if _, err := c.SMTP.EffectiveTLS(); err != nil {
			errs = append(errs, err)
		}
		if c.SMTP.Username == "" && c.SMTP.Password != "" {
			errs = append(errs, errors.New("SMTP_PASSWORD is set but SMTP_USERNAME is not (authentication happens only when a username is set)"))
		}
		sender(c.SMTP.SenderEmail, "SMTP_SENDER_EMAIL")
	case BackendResend:
		need(c.Resend.APIKey, "RESEND_API_KEY")
		sender(c.Resend.SenderEmail, "RESEND_SENDER_EMAIL")
		if err := checkBaseURL("RESEND_BASE_URL", c.Resend.BaseURL); err != nil {
			errs = append(errs, err)
		}
	case BackendSendGrid:
		need(c.SendGrid.APIKey, "SENDGRID_API_KEY")
		sender(c.SendGrid.SenderEmail, "SENDGRID_SENDER_EMAIL")
		if err := checkBaseURL("SENDGRID_BASE_URL", c.SendGrid.BaseURL); err != nil {
			errs = append(errs, err)
		}
	case BackendLog:
		if c.From != "" {
			if _, err := ParseAddress("From", c.From); err != nil {
				errs = append(errs, fmt.Errorf("email from address: %w", err))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("unknown email backend %q (want smtp, resend, sendgrid or log)", c.Backend))
	}
	return errors.Join(errs...)
}

func checkBaseURL(name, v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s must be an http(s) URL, got %q", name, v)
	}
	return nil
}

// NewSender validates c and builds the active backend's Sender.
func NewSender(c Config, logger *zap.Logger) (Sender, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	from := c.Sender()
	switch c.ActiveBackend() {
	case BackendSMTP:
		return NewSMTPSender(c.SMTP, from)
	case BackendResend:
		return NewResendSender(c.Resend, from)
	case BackendSendGrid:
		return NewSendGridSender(c.SendGrid, from)
	default:
		return NewLogSender(logger, from), nil
	}
}
