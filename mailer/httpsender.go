package mailer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"time"
)

// respInfo records the HTTP answer of one request. resend-go folds every
// non-429 error into a bare string and drops the status code, which is what
// decides retry versus failure; the capturing transport keeps it.
type respInfo struct {
	status     int
	retryAfter string
	body       bytes.Buffer // first maxErrBody bytes
}

const maxErrBody = 4 << 10

type respInfoKey struct{}

func withRespInfo(ctx context.Context) (context.Context, *respInfo) {
	ri := &respInfo{}
	return context.WithValue(ctx, respInfoKey{}, ri), ri
}

// captureTransport copies status, Retry-After and the start of the body of
// each response into the request context's respInfo.
type captureTransport struct{ base http.RoundTripper }

func (t captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp == nil {
		return resp, err
	}
	if ri, ok := req.Context().Value(respInfoKey{}).(*respInfo); ok {
		ri.status = resp.StatusCode
		ri.retryAfter = resp.Header.Get("Retry-After")
		ri.body.Reset()
		resp.Body = teeBody{Reader: io.TeeReader(resp.Body, &limitedWriter{w: &ri.body, n: maxErrBody}), Closer: resp.Body}
	}
	return resp, nil
}

type teeBody struct {
	io.Reader
	io.Closer
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.n -= len(q)
		_, _ = l.w.Write(q)
	}
	return len(p), nil
}

// httpClient returns a copy of base (or a new client with timeout) whose
// transport records answers.
func httpClient(base *http.Client, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultSendTimeout
	}
	var c http.Client
	if base != nil {
		c = *base
	} else {
		c.Timeout = timeout
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.Transport = captureTransport{base: rt}
	return &c
}

// providerIdempotencyKey fits an idempotency key into the 256 characters
// Resend accepts, keeping it stable.
func providerIdempotencyKey(k string) string {
	if len(k) <= 256 {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256-" + hex.EncodeToString(sum[:])
}
