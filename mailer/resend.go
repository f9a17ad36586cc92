package mailer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/resend/resend-go/v2"
)

// ResendSender sends through the Resend API (POST {base}/emails). Every
// request carries the message's Idempotency-Key, so a retry after a lost
// answer or a crash is not sent twice (Resend keeps keys for 24 hours).
type ResendSender struct {
	client *resend.Client
	from   string
	now    func() time.Time
}

// NewResendSender returns a ResendSender for cfg; from overrides
// cfg.SenderEmail when set.
func NewResendSender(cfg ResendConfig, from string) (*ResendSender, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("RESEND_API_KEY is required when the resend email backend is active")
	}
	if from == "" {
		from = cfg.SenderEmail
	}
	if _, err := ParseAddress("RESEND_SENDER_EMAIL", from); err != nil {
		return nil, err
	}
	base, err := baseURLWithSlash(cfg.BaseURL, DefaultResendBaseURL, "RESEND_BASE_URL")
	if err != nil {
		return nil, err
	}
	c := resend.NewCustomClient(httpClient(cfg.HTTPClient, cfg.Timeout), strings.TrimSpace(cfg.APIKey))
	// Set explicitly: resend-go otherwise reads RESEND_BASE_URL itself at
	// init, which would bypass a Caddyfile override.
	c.BaseURL = base
	return &ResendSender{client: c, from: from, now: time.Now}, nil
}

// baseURLWithSlash parses a base URL and makes sure relative API paths are
// resolved below it ("https://relay/x" + "emails" → "https://relay/x/emails").
func baseURLWithSlash(v, def, name string) (*url.URL, error) {
	if v == "" {
		v = def
	}
	if err := checkBaseURL(name, v); err != nil {
		return nil, err
	}
	u, _ := url.Parse(v)
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u, nil
}

func (s *ResendSender) Name() string { return BackendResend }
func (s *ResendSender) From() string { return s.from }

// Send posts env to /emails and returns Resend's email id.
func (s *ResendSender) Send(ctx context.Context, env *Envelope) (string, error) {
	rctx, ri := withRespInfo(ctx)
	req := &resend.SendEmailRequest{
		From:    s.from,
		To:      env.To,
		Subject: env.Subject,
		Html:    env.HTML,
		Text:    env.Text,
	}
	var opts *resend.SendEmailOptions
	if env.IdempotencyKey != "" {
		opts = &resend.SendEmailOptions{IdempotencyKey: providerIdempotencyKey(env.IdempotencyKey)}
	}
	resp, err := s.client.Emails.SendWithOptions(rctx, req, opts)
	if err == nil {
		return resp.Id, nil
	}
	if ri.status == 0 {
		return "", classifyTransport(BackendResend, err)
	}
	if ri.status >= 200 && ri.status < 300 {
		// Accepted, but the answer did not decode. Retrying would be
		// de-duplicated by the Idempotency-Key, but there is no need.
		return "", nil
	}
	body := ri.body.String()
	// 409 concurrent_idempotent_requests: the same key is still being
	// processed (a previous attempt timed out on our side). Try again later;
	// the answer will then be the first request's.
	if ri.status == 409 && strings.Contains(body, "concurrent_idempotent_requests") {
		return "", Transient(BackendResend, 409, parseRetryAfter(ri.retryAfter, s.now()), fmt.Errorf("HTTP 409: %s", strings.TrimSpace(body)))
	}
	return "", classifyHTTP(BackendResend, ri.status, ri.retryAfter, body, s.now())
}
