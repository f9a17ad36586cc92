package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// SMTPSender sends through an SMTP server with go-mail.
//
// Each Send opens its own connection and go-mail client: go-mail's Client
// keeps per-session state (auth type discovery, the current connection), so
// one shared client is not safe for concurrent workers. Notification volume
// is low; a connection per email keeps failure handling simple (a broken
// session never poisons the next message).
//
// Duplicate window: see the package documentation. The Message-ID is
// derived from the idempotency key, so a resend after a crash between the
// server's 250 and the outbox's MarkSent carries the same Message-ID.
type SMTPSender struct {
	cfg     SMTPConfig
	from    string
	addr    *mail.Address
	tlsMode string
	port    int
}

// NewSMTPSender checks cfg and from and returns an SMTPSender.
func NewSMTPSender(cfg SMTPConfig, from string) (*SMTPSender, error) {
	if cfg.Host == "" {
		return nil, errors.New("SMTP_HOST is required when the smtp email backend is active")
	}
	mode, err := cfg.EffectiveTLS()
	if err != nil {
		return nil, err
	}
	if from == "" {
		from = cfg.SenderEmail
	}
	addr, err := ParseAddress("SMTP_SENDER_EMAIL", from)
	if err != nil {
		return nil, err
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultSendTimeout
	}
	port := cfg.port()
	if port < 1 || port > 65535 {
		return nil, errors.New("SMTP_PORT must be a port number between 1 and 65535")
	}
	return &SMTPSender{cfg: cfg, from: from, addr: addr, tlsMode: mode, port: port}, nil
}

func (s *SMTPSender) Name() string { return BackendSMTP }
func (s *SMTPSender) From() string { return s.from }

// TLSMode returns the resolved TLS mode (TLSStartTLS, TLSImplicit, ...).
func (s *SMTPSender) TLSMode() string { return s.tlsMode }

func (s *SMTPSender) tlsConfig() *tls.Config {
	var c *tls.Config
	if s.cfg.TLSConfig != nil {
		c = s.cfg.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = s.cfg.Host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// buildMsg renders env as multipart/alternative (text/plain first, then
// text/html, as RFC 2046 orders alternatives by increasing preference) with
// a Message-ID and Date that are the same on every attempt.
func (s *SMTPSender) buildMsg(env *Envelope) (*gomail.Msg, error) {
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	m.FromMailAddress(s.addr)
	if err := m.To(env.To...); err != nil {
		return nil, Permanent(BackendSMTP, 0, fmt.Errorf("recipients: %w", err))
	}
	m.Subject(env.Subject)
	id := MessageID(env.IdempotencyKey, s.from)
	m.SetMessageIDWithValue(strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">"))
	date := env.Date
	if date.IsZero() {
		date = time.Now()
	}
	m.SetDateWithValue(date)
	m.SetGenHeader(gomail.HeaderXMailer, "llmspend")
	m.SetBodyString(gomail.TypeTextPlain, env.Text)
	m.AddAlternativeString(gomail.TypeTextHTML, env.HTML)
	return m, nil
}

func (s *SMTPSender) authOptions() []gomail.Option {
	if s.cfg.Username == "" {
		return nil
	}
	plain, login := gomail.SMTPAuthPlain, gomail.SMTPAuthLogin
	if s.cfg.AllowInsecureAuth {
		plain, login = gomail.SMTPAuthPlainNoEnc, gomail.SMTPAuthLoginNoEnc
	}
	// Strongest first; go-mail's PLAIN/LOGIN refuse an unencrypted
	// connection to anything but localhost unless AllowInsecureAuth.
	return []gomail.Option{
		gomail.WithUsername(s.cfg.Username),
		gomail.WithPassword(s.cfg.Password),
		gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1, plain, login, gomail.SMTPAuthCramMD5),
	}
}

// Send delivers env in one SMTP session. ctx cancellation closes the
// connection at once (the Pool's shutdown deadline relies on it).
func (s *SMTPSender) Send(ctx context.Context, env *Envelope) (string, error) {
	msg, err := s.buildMsg(env)
	if err != nil {
		return "", err
	}
	tlsCfg := s.tlsConfig()

	// conns collects every connection the dialer opens so that cancellation
	// can close them; closing a net.Conn interrupts a blocked read or write.
	var (
		mu     sync.Mutex
		conns  []net.Conn
		cancel bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		cancel = true
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	dial := func(dctx context.Context, network, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: s.cfg.DialTimeout}
		conn, err := d.DialContext(dctx, network, address)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		conns = append(conns, conn)
		canceled := cancel
		mu.Unlock()
		if canceled {
			_ = conn.Close()
			return nil, ctx.Err()
		}
		if s.tlsMode != TLSImplicit {
			return conn, nil
		}
		tc := tls.Client(conn, tlsCfg)
		hctx, hcancel := context.WithTimeout(dctx, s.cfg.DialTimeout)
		defer hcancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}

	opts := []gomail.Option{
		gomail.WithPort(s.port),
		gomail.WithTimeout(s.cfg.Timeout),
		gomail.WithTLSConfig(tlsCfg),
		gomail.WithDialContextFunc(dial),
	}
	switch s.tlsMode {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSOpportunistic:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case TLSImplicit:
		// The dialer already did the TLS handshake; WithSSL stops go-mail
		// from attempting STARTTLS on top of it.
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.HELO != "" {
		opts = append(opts, gomail.WithHELO(s.cfg.HELO))
	}
	opts = append(opts, s.authOptions()...)

	client, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return "", Permanent(BackendSMTP, 0, fmt.Errorf("smtp client: %w", err))
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return "", classifySMTP(ctx, fmt.Errorf("connect %s:%d: %w", s.cfg.Host, s.port, err))
	}
	defer func() { _ = client.CloseWithSMTPClient(sc) }()
	err = client.SendWithSMTPClient(sc, msg)
	// go-mail reports a failed RSET after a successful DATA as an error; the
	// message was accepted, so it must not be sent again.
	if msg.IsDelivered() {
		return smtpProviderID(msg), nil
	}
	if err != nil {
		return "", classifySMTP(ctx, err)
	}
	return smtpProviderID(msg), nil
}

func smtpProviderID(m *gomail.Msg) string {
	if r := strings.TrimSpace(m.ServerResponse()); r != "" {
		return r
	}
	return m.GetMessageID()
}

// classifySMTP maps a go-mail error to a SendError: reply 5xx is
// permanent, 4xx transient; no reply (network, TLS, timeout) is transient.
// A refused STARTTLS policy or certificate is retried too: it is a
// configuration problem an operator can fix while the message waits, and
// the attempt limit still ends it.
func classifySMTP(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return Transient(BackendSMTP, 0, 0, fmt.Errorf("%w (%v)", ctx.Err(), err))
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		code := se.ErrorCode()
		switch {
		case code >= 500:
			return Permanent(BackendSMTP, code, err)
		case code >= 400:
			return Transient(BackendSMTP, code, 0, err)
		}
		switch se.Reason {
		case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
			return Permanent(BackendSMTP, 0, err)
		}
		return Transient(BackendSMTP, 0, 0, err)
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		if te.Code >= 500 {
			return Permanent(BackendSMTP, te.Code, err)
		}
		return Transient(BackendSMTP, te.Code, 0, err)
	}
	// go-mail wraps some replies as plain errors whose text starts with the
	// code ("535 5.7.8 authentication failed").
	if code := leadingCode(err); code >= 500 {
		return Permanent(BackendSMTP, code, err)
	} else if code >= 400 {
		return Transient(BackendSMTP, code, 0, err)
	}
	return Transient(BackendSMTP, 0, 0, err)
}

func leadingCode(err error) int {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > i+5 {
		if n, e := strconv.Atoi(s[i+2 : i+5]); e == nil && n >= 200 && n < 600 && s[i+5] == ' ' {
			return n
		}
	}
	if len(s) >= 4 && s[3] == ' ' {
		if n, e := strconv.Atoi(s[:3]); e == nil && n >= 200 && n < 600 {
			return n
		}
	}
	return 0
}
