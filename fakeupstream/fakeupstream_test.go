package fakeupstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// Prerender must not change a response: same status, headers and bytes as
// the rendering path, for every non-stream route, gzip included.
func TestPrerenderSameBytes(t *testing.T) {
	plain := New()
	plain.Record = false
	cached := New()
	cached.Record = false
	cached.Prerender = true
	a := httptest.NewServer(plain)
	defer a.Close()
	b := httptest.NewServer(cached)
	defer b.Close()
	for _, gz := range []bool{false, true} {
		plain.Set(func(s *Server) { s.Gzip = gz })
		cached.Set(func(s *Server) { s.Gzip = gz })
		for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/models"} {
			for _, model := range []string{"gpt-4o-mini", "claude-3-5-haiku-20241022"} {
				body := `{"model":"` + model + `"}`
				ra, ba := post(t, a.URL+path, body)
				for i := 0; i < 2; i++ { // first render, then the cached copy
					rb, bb := post(t, b.URL+path, body)
					if ra.StatusCode != rb.StatusCode || !bytes.Equal(ba, bb) {
						t.Fatalf("%s %s gz=%v try %d: got %d %q, want %d %q", path, model, gz, i, rb.StatusCode, bb, ra.StatusCode, ba)
					}
					for _, h := range []string{"Content-Type", "Content-Encoding", "Content-Length"} {
						if ra.Header.Get(h) != rb.Header.Get(h) {
							t.Fatalf("%s gz=%v: %s %q, want %q", path, gz, h, rb.Header.Get(h), ra.Header.Get(h))
						}
					}
				}
			}
		}
	}
	// A usage change must not serve the old body.
	cached.Set(func(s *Server) { s.Usage.OutputTokens = 777 })
	_, bb := post(t, b.URL+"/v1/chat/completions", `{"model":"gpt-4o-mini"}`)
	if !bytes.Contains(bb, []byte(`"completion_tokens":777`)) {
		t.Fatalf("stale pre-rendered body after a usage change: %s", bb)
	}
}

// The cache is bounded: models come from clients.
func TestPrerenderBounded(t *testing.T) {
	s := New()
	s.Record = false
	s.Prerender = true
	srv := httptest.NewServer(s)
	defer srv.Close()
	for i := 0; i < maxRendered+20; i++ {
		res, b := post(t, srv.URL+"/v1/chat/completions", `{"model":"m`+strconv.Itoa(i)+`"}`)
		if res.StatusCode != 200 || !bytes.Contains(b, []byte(`"usage"`)) {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, b)
		}
	}
	if n := s.nRendered.Load(); n > maxRendered {
		t.Fatalf("%d pre-rendered bodies, bound is %d", n, maxRendered)
	}
}

// FirstChunkDelay holds the first event, not the headers.
func TestFirstChunkDelay(t *testing.T) {
	s := New()
	s.Record = false
	s.FirstChunkDelay = 150 * time.Millisecond
	srv := httptest.NewServer(s)
	defer srv.Close()
	t0 := time.Now()
	res, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o-mini","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	headers := time.Since(t0)
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(t0)
	if headers >= 100*time.Millisecond {
		t.Fatalf("headers took %v: they should not wait for the first token", headers)
	}
	if first < 150*time.Millisecond {
		t.Fatalf("first event after %v, want >= 150ms", first)
	}
	if !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q", line)
	}
}
