package mailer

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
)

// Sender delivers one email through one backend. Implementations are safe
// for concurrent use by the Pool's workers.
type Sender interface {
	// Name is the backend name (smtp, resend, sendgrid, log), recorded in
	// the outbox and used as the metrics label.
	Name() string
	// From is the sender address every message goes out with.
	From() string
	// Send delivers env and returns the backend's answer: its message id
	// (Resend, SendGrid), the SMTP server's final reply, or "" when it gives
	// none. Errors are *SendError (see IsPermanent, RetryAfterOf); anything
	// else is treated as transient.
	Send(ctx context.Context, env *Envelope) (providerID string, err error)
}

// keyPattern matches LiteLLM-style virtual keys ("sk-" then url-safe base64).
var keyPattern = regexp.MustCompile(`sk-[A-Za-z0-9_\-]{4,}`)

// RedactKeys replaces every "sk-..." key in s with "sk-...last4", the same
// display form LiteLLM uses for key_name.
func RedactKeys(s string) string {
	return keyPattern.ReplaceAllStringFunc(s, func(k string) string {
		return "sk-..." + k[len(k)-4:]
	})
}

// LogSender writes emails to the log instead of sending them. It is the
// zero-config default, so that an operator without a mail backend can still
// see what would have been sent; keys in the body are redacted.
type LogSender struct {
	logger *zap.Logger
	from   string
	seq    atomic.Int64
}

// NewLogSender returns a LogSender; from defaults to llmspend@localhost.
func NewLogSender(logger *zap.Logger, from string) *LogSender {
	if logger == nil {
		logger = zap.NewNop()
	}
	if from == "" {
		from = defaultLogFrom
	}
	return &LogSender{logger: logger, from: from}
}

func (s *LogSender) Name() string { return BackendLog }
func (s *LogSender) From() string { return s.from }

// Send logs the recipients, subject, kind and plain-text body.
func (s *LogSender) Send(ctx context.Context, env *Envelope) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", Transient(BackendLog, 0, 0, err)
	}
	id := "log-" + strconv.FormatInt(s.seq.Add(1), 10)
	s.logger.Info("email (log backend: not sent)",
		zap.String("id", id),
		zap.Int64("outbox_id", env.OutboxID),
		zap.String("kind", env.Kind),
		zap.String("from", s.from),
		zap.Strings("to", env.To),
		zap.String("subject", RedactKeys(env.Subject)),
		zap.String("message_id", MessageID(env.IdempotencyKey, s.from)),
		zap.String("text", RedactKeys(strings.TrimSpace(env.Text))),
	)
	return id, nil
}
