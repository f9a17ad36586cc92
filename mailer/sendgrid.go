package mailer

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sendgrid/rest"
	"github.com/sendgrid/sendgrid-go"
	sgmail "github.com/sendgrid/sendgrid-go/helpers/mail"
)

// SendGridSender sends through the SendGrid v3 API (POST {base}/v3/mail/send).
// SendGrid has no idempotency key; the key is sent in custom_args so that a
// rare duplicate (see the package documentation) can be traced in its logs.
type SendGridSender struct {
	key    string
	host   string
	from   string
	client *rest.Client
	now    func() time.Time
}

// NewSendGridSender returns a SendGridSender for cfg; from overrides
// cfg.SenderEmail when set.
func NewSendGridSender(cfg SendGridConfig, from string) (*SendGridSender, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("SENDGRID_API_KEY is required when the sendgrid email backend is active")
	}
	if from == "" {
		from = cfg.SenderEmail
	}
	if _, err := ParseAddress("SENDGRID_SENDER_EMAIL", from); err != nil {
		return nil, err
	}
	base, err := baseURLWithSlash(cfg.BaseURL, DefaultSendGridBaseURL, "SENDGRID_BASE_URL")
	if err != nil {
		return nil, err
	}
	// Not sendgrid.DefaultClient: it is a shared global without a timeout.
	return &SendGridSender{
		key:    strings.TrimSpace(cfg.APIKey),
		host:   strings.TrimSuffix(base.String(), "/"),
		from:   from,
		client: &rest.Client{HTTPClient: httpClient(cfg.HTTPClient, cfg.Timeout)},
		now:    time.Now,
	}, nil
}

func (s *SendGridSender) Name() string { return BackendSendGrid }
func (s *SendGridSender) From() string { return s.from }

// body builds the v3 mail/send payload: one personalization with every
// recipient, content text/plain then text/html (the order SendGrid requires).
func (s *SendGridSender) body(env *Envelope) ([]byte, error) {
	fa, err := ParseAddress("SENDGRID_SENDER_EMAIL", s.from)
	if err != nil {
		return nil, err
	}
	m := sgmail.NewV3Mail()
	m.SetFrom(sgmail.NewEmail(fa.Name, fa.Address))
	m.Subject = env.Subject
	p := sgmail.NewPersonalization()
	for _, to := range env.To {
		a, err := ParseAddress("To", to)
		if err != nil {
			return nil, err
		}
		p.AddTos(sgmail.NewEmail(a.Name, a.Address))
	}
	m.AddPersonalizations(p)
	m.AddContent(sgmail.NewContent("text/plain", env.Text), sgmail.NewContent("text/html", env.HTML))
	if env.IdempotencyKey != "" {
		m.SetCustomArg("llmspend_idempotency_key", providerIdempotencyKey(env.IdempotencyKey))
	}
	if env.Kind != "" {
		m.SetCustomArg("llmspend_kind", env.Kind)
	}
	return sgmail.GetRequestBody(m), nil
}

// Send posts env and returns SendGrid's X-Message-Id.
func (s *SendGridSender) Send(ctx context.Context, env *Envelope) (string, error) {
	body, err := s.body(env)
	if err != nil {
		return "", Permanent(BackendSendGrid, 0, err)
	}
	req := sendgrid.GetRequest(s.key, "/v3/mail/send", s.host)
	req.Method = rest.Post
	req.Body = body
	resp, err := s.client.SendWithContext(ctx, req)
	if err != nil {
		return "", classifyTransport(BackendSendGrid, err)
	}
	if err := classifyHTTP(BackendSendGrid, resp.StatusCode, first(resp.Headers, "Retry-After"), resp.Body, s.now()); err != nil {
		return "", err
	}
	return first(resp.Headers, "X-Message-Id"), nil
}

func first(h map[string][]string, k string) string {
	return http.Header(h).Get(k)
}
