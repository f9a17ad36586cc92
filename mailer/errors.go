package mailer

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SendError classifies a delivery failure for the Pool: retry it later, or
// record it as failed.
type SendError struct {
	// Permanent is true when a retry cannot succeed (SMTP 5xx, HTTP 4xx
	// other than 408/429, a message the backend refuses).
	Permanent bool
	// RetryAfter is the backend's minimum wait before the next attempt
	// (HTTP Retry-After); zero when it gave none.
	RetryAfter time.Duration
	// Code is the SMTP reply code or HTTP status; 0 when there was no answer
	// (network error, timeout).
	Code int
	// Backend names the sender that failed.
	Backend string
	Err     error
}

func (e *SendError) Error() string {
	var b strings.Builder
	b.WriteString(e.Backend)
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Permanent {
		b.WriteString("permanent")
	} else {
		b.WriteString("transient")
	}
	if e.Code != 0 {
		b.WriteString(" ")
		b.WriteString(strconv.Itoa(e.Code))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *SendError) Unwrap() error { return e.Err }

// Permanent wraps err as a failure that must not be retried.
func Permanent(backend string, code int, err error) error {
	return &SendError{Permanent: true, Code: code, Backend: backend, Err: err}
}

// Transient wraps err as a failure worth retrying after at least retryAfter.
func Transient(backend string, code int, retryAfter time.Duration, err error) error {
	return &SendError{RetryAfter: retryAfter, Code: code, Backend: backend, Err: err}
}

// IsPermanent reports whether err must not be retried. Errors that are not
// a *SendError are transient: an unknown failure is retried (a bounded
// number of times) rather than dropped.
func IsPermanent(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Permanent
}

// RetryAfterOf returns the minimum wait the backend asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var se *SendError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// CodeOf returns the SMTP reply code or HTTP status of err, or 0.
func CodeOf(err error) int {
	var se *SendError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// maxRetryAfter caps a backend's Retry-After: a misbehaving relay must not
// park a message for weeks.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads an HTTP Retry-After value: delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if !(secs > 0) { // also NaN
			return 0
		}
		if secs >= maxRetryAfter.Seconds() { // also +Inf: no overflowing conversion
			return maxRetryAfter
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// classifyHTTP turns an HTTP answer into nil (2xx) or a SendError.
// 408 and 429 and every 5xx are transient; other 4xx are permanent (bad key,
// refused sender, invalid payload: retrying sends the same request).
func classifyHTTP(backend string, status int, retryAfter string, body string, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	msg := strings.TrimSpace(body)
	if len(msg) > 512 {
		msg = msg[:512] + "..."
	}
	err := fmt.Errorf("HTTP %d %s: %s", status, http.StatusText(status), msg)
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return Transient(backend, status, parseRetryAfter(retryAfter, now), err)
	default:
		return Permanent(backend, status, err)
	}
}

// classifyTransport wraps an error that produced no HTTP answer or SMTP
// reply: network trouble, timeouts, cancellation (the Pool stopping). All are
// transient: the message stays in the outbox for the next attempt.
func classifyTransport(backend string, err error) error {
	if err == nil {
		return nil
	}
	var se *SendError
	if errors.As(err, &se) {
		return err
	}
	return Transient(backend, 0, 0, err)
}
