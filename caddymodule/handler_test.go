package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuthBothHeaderStylesAndKeyNeverReachesUpstream(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "team-a"})

	r := g.chat(key, "gpt-4o-mini")
	if r.Status != http.StatusOK {
		t.Fatalf("bearer: status %d: %s", r.Status, r.Body)
	}
	r = g.do("POST", "/v1/messages", map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"},
		map[string]any{"model": "claude-3-5-haiku-20241022", "max_tokens": 100, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	if r.Status != http.StatusOK {
		t.Fatalf("x-api-key: status %d: %s", r.Status, r.Body)
	}
	// The /v1-less path is accepted and rewritten.
	r = g.do("POST", "/chat/completions", bearer(key), map[string]any{"model": "gpt-4o-mini", "messages": []any{}})
	if r.Status != http.StatusOK {
		t.Fatalf("no /v1 prefix: status %d: %s", r.Status, r.Body)
	}

	got := g.upstream.Received()
	if len(got) != 3 {
		t.Fatalf("upstream got %d requests, want 3", len(got))
	}
	for i, rec := range got {
		for name, vals := range rec.Header {
			for _, v := range vals {
				if strings.Contains(v, key) || strings.Contains(v, key[3:]) {
					t.Errorf("request %d: virtual key leaked upstream in header %s", i, name)
				}
			}
		}
		if strings.Contains(string(rec.Body), key) {
			t.Errorf("request %d: virtual key in upstream body", i)
		}
		if a := rec.Header.Get("Authorization"); a != "Bearer sk-upstream-real-openai" {
			t.Errorf("request %d: upstream Authorization = %q, want the real provider key", i, a)
		}
	}
	if got[1].Path != "/v1/messages" || got[2].Path != "/v1/chat/completions" {
		t.Errorf("paths = %q, %q", got[1].Path, got[2].Path)
	}
}

func TestAuthErrorsExactlyAsSpec(t *testing.T) {
	g := newGateway(t, "")
	cases := []struct {
		name    string
		headers map[string]string
		msgHas  string
	}{
		{"missing", nil, "No api key passed in"},
		{"unknown", bearer("sk-does-not-exist-000000000"), "Invalid proxy server token"},
		{"malformed bearer", map[string]string{"Authorization": "Basic abc"}, "No api key passed in"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := g.do("POST", "/v1/chat/completions", c.headers, `{"model":"gpt-4o-mini"}`)
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.Status, r.Body)
			}
			e := errorBody(t, r)
			if e.Type != "auth_error" || e.Code != "401" || e.Param != nil || !strings.Contains(e.Message, c.msgHas) {
				t.Fatalf("error = %+v", e)
			}
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("content-type %q", r.Header.Get("Content-Type"))
			}
		})
	}
	if n := len(g.upstream.Received()); n != 0 {
		t.Fatalf("rejected requests reached the upstream %d times", n)
	}

	blocked := g.newKey(map[string]any{"blocked": true})
	r := g.chat(blocked, "gpt-4o-mini")
	if e := errorBody(t, r); r.Status != 401 || e.Type != "auth_error" || !strings.Contains(e.Message, "blocked") {
		t.Fatalf("blocked: %d %+v", r.Status, e)
	}

	// A key that expires in 1s stops working after that.
	expiring := g.newKey(map[string]any{"duration": "1s"})
	if r := g.chat(expiring, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("fresh expiring key: %d %s", r.Status, r.Body)
	}
	waitUntil(t, func() bool { return g.chat(expiring, "gpt-4o-mini").Status == 401 })
	r = g.chat(expiring, "gpt-4o-mini")
	if e := errorBody(t, r); e.Type != "auth_error" || !strings.Contains(e.Message, "Expired Key") {
		t.Fatalf("expired: %+v", e)
	}
}

func TestModelAccessDenied(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"models": []string{"gpt-4o-mini"}})
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("allowed model: %d %s", r.Status, r.Body)
	}
	r := g.chat(key, "gpt-4o")
	if r.Status != http.StatusForbidden {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	e := errorBody(t, r)
	if e.Type != "key_model_access_denied" || e.Param == nil || *e.Param != "model" || e.Code != "403" {
		t.Fatalf("error = %+v", e)
	}
	if n := len(g.upstream.Received()); n != 1 {
		t.Fatalf("upstream got %d requests, want 1", n)
	}
}

func TestMalformedAndOversizedGatewayBody(t *testing.T) {
	g := newGateway(t, "max_request_body 1024")
	key := g.newKey(nil)
	r := g.do("POST", "/v1/chat/completions", bearer(key), `{"model": "gpt-4o-mini",`)
	if e := errorBody(t, r); r.Status != 400 || e.Type != "invalid_request_error" {
		t.Fatalf("malformed: %d %+v", r.Status, e)
	}
	big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 2048) + `"}]}`
	r = g.do("POST", "/v1/chat/completions", bearer(key), big)
	if e := errorBody(t, r); r.Status != 400 || e.Type != "invalid_request_error" || !strings.Contains(e.Message, "limit") {
		t.Fatalf("oversized: %d %+v", r.Status, e)
	}
	if n := len(g.upstream.Received()); n != 0 {
		t.Fatalf("bad requests reached upstream %d times", n)
	}
}

// With the access log of Caddyfile.example, neither header style leaves the
// virtual key in a log line, and the handler's own logs never hold it.
func TestVirtualKeyNeverLogged(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "logged"})
	logFile := filepath.Join(t.TempDir(), "access.log")
	cf := strings.Replace(g.caddyfile(), "\thandle /v1/* {", "\tlog {\n\t\toutput file "+logFile+"\n\t\tformat filter {\n\t\t\trequest>headers>X-Api-Key replace REDACTED\n\t\t\trequest>uri regexp \"sk-[A-Za-z0-9_-]+\" \"sk-REDACTED\"\n\t\t}\n\t}\n\thandle /v1/* {", 1)
	cf = strings.Replace(cf, "level ERROR", "level DEBUG", 1)
	g.loadText(cf)
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	g.do("POST", "/v1/messages", map[string]string{"x-api-key": key}, `{"model":"claude-3-5-haiku-20241022","max_tokens":5,"messages":[]}`)
	g.do("POST", "/v1/messages", map[string]string{"x-api-key": key + "x"}, `{}`) // an unknown key is logged redacted too
	g.mustAdmin("GET", "/key/info?key="+key, nil)                                 // LiteLLM puts keys in admin URLs
	waitUntil(t, func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Count(string(b), "\n") >= 4
	})
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), key[3:]) {
		t.Fatalf("virtual key in the access log:\n%s", b)
	}
	if !strings.Contains(string(b), "REDACTED") {
		t.Fatalf("access log has no redacted headers:\n%s", b)
	}
}
