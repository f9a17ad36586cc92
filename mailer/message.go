package mailer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// Validation errors. Callers test them with errors.Is; the wrapped message
// names the offending field.
var (
	// ErrHeaderInjection is returned when a header value (To, Subject, From,
	// Kind or IdempotencyKey) contains CR, LF or NUL: such a value could add
	// headers or recipients to the email or to the provider's HTTP request.
	ErrHeaderInjection = errors.New("mailer: CR, LF or NUL in a header value")
	// ErrInvalidAddress is returned for a recipient or sender that net/mail
	// cannot parse, or an empty recipient list.
	ErrInvalidAddress = errors.New("mailer: invalid email address")
	// ErrInvalidMessage is returned when a required part (subject, HTML or
	// plain-text body) is missing.
	ErrInvalidMessage = errors.New("mailer: invalid message")
)

// MaxRecipients bounds To: LiteLLM's team alerts send one email to every
// alert address of a team, and SMTP servers commonly refuse more than 100.
const MaxRecipients = 100

// Message is one rendered email, as produced by the templates package.
type Message struct {
	// Kind names the template (invitation, key_created, key_rotated,
	// soft_budget, max_budget, test); it is stored, logged and counted.
	Kind string
	// To holds RFC 5322 addresses ("a@b.c" or "Name <a@b.c>").
	To      []string
	Subject string
	// HTML and Text are both required: every email is multipart/alternative.
	HTML string
	Text string
	// IdempotencyKey is unique per logical email. A second Enqueue with the
	// same key returns the first message's outbox ID; Resend receives it as
	// the Idempotency-Key header and SMTP derives the Message-ID from it.
	// Pool.Enqueue generates a random key when it is empty.
	IdempotencyKey string
	// Sensitive marks a body that holds a plain key: the outbox blanks it once
	// the message is sent or failed, and the log sender redacts keys.
	Sensitive bool
}

// Validate checks m before it is queued, so that a message that can never be
// sent is refused to the caller instead of failing later in a worker.
func (m *Message) Validate() error {
	if err := checkHeader("Kind", m.Kind); err != nil {
		return err
	}
	if err := checkHeader("IdempotencyKey", m.IdempotencyKey); err != nil {
		return err
	}
	if len(m.IdempotencyKey) > 512 {
		return fmt.Errorf("%w: IdempotencyKey longer than 512 bytes", ErrInvalidMessage)
	}
	if len(m.To) == 0 {
		return fmt.Errorf("%w: no recipient", ErrInvalidAddress)
	}
	if len(m.To) > MaxRecipients {
		return fmt.Errorf("%w: %d recipients, at most %d", ErrInvalidAddress, len(m.To), MaxRecipients)
	}
	for _, to := range m.To {
		if _, err := ParseAddress("To", to); err != nil {
			return err
		}
	}
	if err := checkHeader("Subject", m.Subject); err != nil {
		return err
	}
	if strings.TrimSpace(m.Subject) == "" {
		return fmt.Errorf("%w: empty Subject", ErrInvalidMessage)
	}
	if strings.TrimSpace(m.HTML) == "" {
		return fmt.Errorf("%w: empty HTML body", ErrInvalidMessage)
	}
	if strings.TrimSpace(m.Text) == "" {
		return fmt.Errorf("%w: empty plain-text body", ErrInvalidMessage)
	}
	return nil
}

// ParseAddress parses one address of header field, refusing CR/LF first (a
// lenient parser could otherwise fold them away and hide an injection).
func ParseAddress(field, addr string) (*mail.Address, error) {
	if err := checkHeader(field, addr); err != nil {
		return nil, err
	}
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q: %v", ErrInvalidAddress, field, addr, err)
	}
	return a, nil
}

func checkHeader(field, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("%w: %s", ErrHeaderInjection, field)
	}
	return nil
}

// Envelope is what a Sender sends: the message plus the delivery facts that
// must stay the same on every attempt.
type Envelope struct {
	Message
	// OutboxID is the outbox row (0 when sent without the outbox).
	OutboxID int64
	// Attempt counts from 1.
	Attempt int
	// Date is when the message was first accepted; the Date header uses it
	// so that a retried message is byte-for-byte the same email.
	Date time.Time
}

// MessageID returns the Message-ID header value ("<...@domain>") for an
// idempotency key, with the domain of the from address. It is stable across
// retries, restarts and instances, so a duplicate after a crash can be
// recognised by receivers.
func MessageID(idempotencyKey, from string) string {
	domain := "llmspend.localhost"
	if a, err := mail.ParseAddress(from); err == nil {
		if i := strings.LastIndexByte(a.Address, '@'); i >= 0 && i+1 < len(a.Address) {
			domain = a.Address[i+1:]
		}
	}
	sum := sha256.Sum256([]byte(idempotencyKey))
	return "<" + hex.EncodeToString(sum[:16]) + ".llmspend@" + domain + ">"
}
