package mailer

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/store"
)

// apiServer is an httptest server that records requests and answers from a
// script (one answer per request; the last repeats).
type apiServer struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []recorded
	answers []answer
}

type recorded struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

type answer struct {
	status int
	header map[string]string
	body   string
}

func newAPIServer(t *testing.T, answers ...answer) *apiServer {
	a := &apiServer{answers: answers}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
		ans := a.answers[min(len(a.reqs)-1, len(a.answers)-1)]
		a.mu.Unlock()
		for k, v := range ans.header {
			w.Header().Set(k, v)
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(ans.status)
		io.WriteString(w, ans.body)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *apiServer) requests() []recorded {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]recorded(nil), a.reqs...)
}

func newResend(t *testing.T, base string) *ResendSender {
	t.Helper()
	s, err := NewResendSender(ResendConfig{APIKey: "re_test_123", SenderEmail: "LiteLLM <alerts@llmspend.test>", BaseURL: base, Timeout: 5 * time.Second}, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestResendRequestShape(t *testing.T) {
	api := newAPIServer(t, answer{status: 200, body: `{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`})
	// A base URL with a path prefix (a private relay) must be kept.
	s := newResend(t, api.URL+"/relay")
	m := testMessage(7)
	m.To = []string{"a@example.com", "b@example.com"}
	pid, err := sendOne(t, s, m)
	if err != nil {
		t.Fatal(err)
	}
	if pid != "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794" {
		t.Errorf("provider id %q", pid)
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/relay/emails" {
		t.Errorf("%s %s, want POST /relay/emails", r.Method, r.Path)
	}
	if r.Header.Get("Authorization") != "Bearer re_test_123" {
		t.Errorf("auth %q", r.Header.Get("Authorization"))
	}
	if r.Header.Get("Idempotency-Key") != "test-7" {
		t.Errorf("Idempotency-Key %q", r.Header.Get("Idempotency-Key"))
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body["from"] != "LiteLLM <alerts@llmspend.test>" || body["subject"] != m.Subject ||
		body["html"] != m.HTML || body["text"] != m.Text {
		t.Errorf("body %s", r.Body)
	}
	if to, _ := body["to"].([]any); len(to) != 2 || to[0] != "a@example.com" {
		t.Errorf("to %v", body["to"])
	}
}

func TestResendClassification(t *testing.T) {
	cases := []struct {
		name       string
		ans        answer
		permanent  bool
		code       int
		retryAfter time.Duration
	}{
		{"429 retry-after", answer{status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"name":"rate_limit_exceeded","message":"Too many requests"}`}, false, 429, 7 * time.Second},
		{"400", answer{status: 400, body: `{"statusCode":400,"name":"validation_error","message":"Invalid from field"}`}, true, 400, 0},
		{"401", answer{status: 401, body: `{"name":"missing_api_key"}`}, true, 401, 0},
		{"422", answer{status: 422, body: `{"name":"validation_error"}`}, true, 422, 0},
		{"500", answer{status: 500, body: `{"message":"internal"}`}, false, 500, 0},
		{"503 retry-after", answer{status: 503, header: map[string]string{"Retry-After": "120"}, body: `oops`}, false, 503, 2 * time.Minute},
		{"409 concurrent", answer{status: 409, body: `{"name":"concurrent_idempotent_requests"}`}, false, 409, 0},
		{"409 other payload", answer{status: 409, body: `{"name":"invalid_idempotent_request"}`}, true, 409, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := newAPIServer(t, tc.ans)
			_, err := sendOne(t, newResend(t, api.URL), testMessage(1))
			if err == nil {
				t.Fatal("no error")
			}
			if IsPermanent(err) != tc.permanent || CodeOf(err) != tc.code || RetryAfterOf(err) != tc.retryAfter {
				t.Fatalf("err %v: permanent %v code %d retryAfter %v", err, IsPermanent(err), CodeOf(err), RetryAfterOf(err))
			}
			if tc.ans.status == 400 && !strings.Contains(err.Error(), "Invalid from field") {
				t.Errorf("reason lost: %v", err)
			}
		})
	}
	// Connection refused: transient.
	api := newAPIServer(t, answer{status: 200})
	url := api.URL
	api.Close()
	if _, err := sendOne(t, newResend(t, url), testMessage(1)); err == nil || IsPermanent(err) {
		t.Fatalf("refused: %v", err)
	}
}

// A retried Resend message carries the same Idempotency-Key every time.
func TestPoolResendRetryKeepsIdempotencyKey(t *testing.T) {
	api := newAPIServer(t,
		answer{status: 500, body: `{"message":"boom"}`},
		answer{status: 429, header: map[string]string{"Retry-After": "0"}, body: `{}`},
		answer{status: 200, body: `{"id":"re-1"}`})
	ob := openStore(t)
	p := NewPool(PoolConfig{Outbox: ob, Sender: newResend(t, api.URL), BaseBackoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	p.Start()
	defer p.Stop(context.Background())
	id, err := p.Enqueue(context.Background(), testMessage(3))
	if err != nil {
		t.Fatal(err)
	}
	m := waitStatus(t, ob, id, store.StatusSent, 5*time.Second)
	if m.ProviderID != "re-1" || m.Backend != BackendResend {
		t.Errorf("provider %q backend %q", m.ProviderID, m.Backend)
	}
	reqs := api.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Header.Get("Idempotency-Key") != "test-3" {
			t.Errorf("request %d Idempotency-Key %q", i, r.Header.Get("Idempotency-Key"))
		}
	}
}

func newSendGrid(t *testing.T, base string) *SendGridSender {
	t.Helper()
	s, err := NewSendGridSender(SendGridConfig{APIKey: "SG.test", SenderEmail: "LiteLLM <alerts@llmspend.test>", BaseURL: base, Timeout: 5 * time.Second}, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSendGridRequestShape(t *testing.T) {
	api := newAPIServer(t, answer{status: 202, header: map[string]string{"X-Message-Id": "sg-abc"}})
	s := newSendGrid(t, api.URL)
	m := testMessage(9)
	m.To = []string{"Alice <a@example.com>", "b@example.com"}
	pid, err := sendOne(t, s, m)
	if err != nil {
		t.Fatal(err)
	}
	if pid != "sg-abc" {
		t.Errorf("provider id %q", pid)
	}
	r := api.requests()[0]
	if r.Method != "POST" || r.Path != "/v3/mail/send" {
		t.Errorf("%s %s", r.Method, r.Path)
	}
	if r.Header.Get("Authorization") != "Bearer SG.test" {
		t.Errorf("auth %q", r.Header.Get("Authorization"))
	}
	var body struct {
		From             struct{ Name, Email string }
		Subject          string
		Personalizations []struct {
			To []struct{ Name, Email string }
		}
		Content []struct {
			Type  string
			Value string
		}
		CustomArgs map[string]string `json:"custom_args"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("%v: %s", err, r.Body)
	}
	if body.From.Email != "alerts@llmspend.test" || body.From.Name != "LiteLLM" || body.Subject != m.Subject {
		t.Errorf("from/subject: %s", r.Body)
	}
	if len(body.Personalizations) != 1 || len(body.Personalizations[0].To) != 2 ||
		body.Personalizations[0].To[0].Email != "a@example.com" || body.Personalizations[0].To[0].Name != "Alice" {
		t.Errorf("personalizations: %s", r.Body)
	}
	if len(body.Content) != 2 || body.Content[0].Type != "text/plain" || body.Content[1].Type != "text/html" ||
		body.Content[0].Value != m.Text || body.Content[1].Value != m.HTML {
		t.Errorf("content must be text/plain then text/html: %s", r.Body)
	}
	if body.CustomArgs["llmspend_idempotency_key"] != "test-9" {
		t.Errorf("custom_args %v", body.CustomArgs)
	}
}

func TestSendGridClassification(t *testing.T) {
	cases := []struct {
		ans        answer
		permanent  bool
		retryAfter time.Duration
	}{
		{answer{status: 429, header: map[string]string{"Retry-After": "3"}, body: `{"errors":[{"message":"too many"}]}`}, false, 3 * time.Second},
		{answer{status: 400, body: `{"errors":[{"message":"The from address does not match a verified Sender Identity"}]}`}, true, 0},
		{answer{status: 403, body: `{"errors":[]}`}, true, 0},
		{answer{status: 500, body: ``}, false, 0},
		{answer{status: 502, header: map[string]string{"Retry-After": time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, false, 90 * time.Second},
	}
	for _, tc := range cases {
		api := newAPIServer(t, tc.ans)
		_, err := sendOne(t, newSendGrid(t, api.URL), testMessage(1))
		if err == nil || IsPermanent(err) != tc.permanent || CodeOf(err) != tc.ans.status {
			t.Errorf("%d: err %v permanent %v", tc.ans.status, err, IsPermanent(err))
			continue
		}
		ra := RetryAfterOf(err)
		if ra > tc.retryAfter || ra < tc.retryAfter-2*time.Second {
			t.Errorf("%d: retryAfter %v, want ~%v", tc.ans.status, ra, tc.retryAfter)
		}
		if tc.ans.status == 400 && !strings.Contains(err.Error(), "verified Sender Identity") {
			t.Errorf("reason lost: %v", err)
		}
	}
}

func TestHTTPSendersHonourContext(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	for _, s := range []Sender{newResend(t, srv.URL), newSendGrid(t, srv.URL)} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		_, err := s.Send(ctx, &Envelope{Message: testMessage(1)})
		cancel()
		if err == nil || IsPermanent(err) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: err %v after %v", s.Name(), err, time.Since(start))
		}
	}
}
