// Package loadtest measures what the llm_spend handler costs: it runs, in
// one process, a fast fake upstream and one Caddy with two sites in front
// of it, (A) plain reverse_proxy and (B) llm_spend + reverse_proxy with a
// real virtual key, and drives the same workloads against both in
// alternating rounds (ABAB...) so machine noise falls on both alike.
//
// Workloads: fixed-rate non-streaming chat completions (added latency),
// saturation with a bounded number of workers (throughput ratio) and
// streaming chat completions (time to first byte). Load comes from vegeta
// used as a library, except streaming, where vegeta gives no TTFB and a
// small open-loop client does. Everything is on 127.0.0.1, every loop is
// bounded in count and in time.
//
// This package imports Caddy (like cmd/caddy) because its purpose is to
// run the real server; nothing else in the module depends on it.
package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/llmspend/llmspend/caddymodule"
	"github.com/llmspend/llmspend/fakeupstream"
)

// upstreamKey is what both sites send upstream in place of the client's key.
const upstreamKey = "sk-upstream-bench"

// Env is a running fake upstream and Caddy with both sites.
type Env struct {
	// PlainURL is site A: reverse_proxy only.
	PlainURL string
	// GatewayURL is site B: llm_spend + reverse_proxy, and the admin API.
	GatewayURL string
	// Key is a valid virtual key on site B (site A ignores it).
	Key string
	// Upstream is the fake upstream; change it with Upstream.Set.
	Upstream *fakeupstream.Server
	// Caddyfile is the configuration that was loaded.
	Caddyfile string

	dir       string
	ownDir    bool
	upSrv     *http.Server
	masterKey string
	closeOnce sync.Once
}

// caddyMu makes sure only one Env runs at a time: Caddy is a process
// singleton.
var caddyMu sync.Mutex

// Start starts the fake upstream and Caddy. dir holds the store and Caddy's
// data; empty means a new temporary directory, removed by Close. Close must
// be called before another Start.
func Start(ctx context.Context, dir string) (*Env, error) {
	if !caddyMu.TryLock() {
		return nil, errors.New("loadtest: another Env is running (Caddy is a process singleton)")
	}
	e := &Env{dir: dir}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "llmspend-bench")
		if err != nil {
			caddyMu.Unlock()
			return nil, err
		}
		e.dir, e.ownDir = d, true
	}
	if err := e.start(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort asks the kernel for a free loopback port. It is released before
// Caddy binds it; on a quiet machine nobody takes it in between.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *Env) start(ctx context.Context) error {
	// The upstream: no recording (it would grow without bound) and
	// pre-rendered bodies, so its cost stays small and equal for A and B.
	e.Upstream = fakeupstream.New()
	e.Upstream.Record = false
	e.Upstream.Prerender = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	e.upSrv = &http.Server{Handler: e.Upstream, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.upSrv.Serve(ln) }()
	upURL := "http://" + ln.Addr().String()

	pa, err := freePort()
	if err != nil {
		return err
	}
	pb, err := freePort()
	if err != nil {
		return err
	}
	e.PlainURL = fmt.Sprintf("http://127.0.0.1:%d", pa)
	e.GatewayURL = fmt.Sprintf("http://127.0.0.1:%d", pb)
	e.masterKey = "sk-master-" + randomHex(16)
	e.Caddyfile = caddyfileText(e.dir, e.masterKey, pa, pb, upURL)

	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(e.Caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting Caddyfile: %w", err)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		return fmt.Errorf("loading Caddy config: %w", err)
	}

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	if err := waitUp(ctx, c, e.GatewayURL+"/health/liveliness"); err != nil {
		return err
	}
	if err := waitUp(ctx, c, e.PlainURL+"/v1/models"); err != nil {
		return err
	}
	if e.Key, err = e.generateKey(ctx, c); err != nil {
		return err
	}
	return e.check(ctx, c)
}

// caddyfileText is the whole configuration: both sites have the same
// routes and the same reverse_proxy, so the only difference between them
// is the llm_spend handler (and the admin API on a path the load never
// takes).
func caddyfileText(dir, masterKey string, pa, pb int, upURL string) string {
	proxy := fmt.Sprintf(`reverse_proxy %s {
			header_up Authorization "Bearer %s"
		}`, upURL, upstreamKey)
	return fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level ERROR
	}
	storage file_system %q
	llm_spend {
		master_key %s
		store %q
	}
}

# A: plain Caddy.
http://127.0.0.1:%d {
	handle /v1/* {
		%s
	}
	handle {
		respond "not found" 404
	}
}

# B: the gateway.
http://127.0.0.1:%d {
	handle /v1/* {
		llm_spend
		%s
	}
	handle {
		llm_spend_admin
		respond "not found" 404
	}
}
`, filepath.Join(dir, "caddydata"), masterKey, filepath.Join(dir, "bench.db"), pa, proxy, pb, proxy)
}

func waitUp(ctx context.Context, c *http.Client, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not answering: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// generateKey creates the virtual key through the admin API, as a user would.
func (e *Env) generateKey(ctx context.Context, c *http.Client) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.GatewayURL+"/key/generate",
		strings.NewReader(`{"key_alias":"llmspend-bench"}`))
	req.Header.Set("Authorization", "Bearer "+e.masterKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST /key/generate: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /key/generate: status %d: %s", res.StatusCode, body)
	}
	var out struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &out); err != nil || !strings.HasPrefix(out.Key, "sk-") {
		return "", fmt.Errorf("POST /key/generate: no key in %s", body)
	}
	return out.Key, nil
}

// check proves each site is what it claims before anything is measured: A
// and B answer a chat completion with the key, and B, unlike A, refuses a
// wrong key (so llm_spend really is in B's path and not in A's).
func (e *Env) check(ctx context.Context, c *http.Client) error {
	body := chatBody(false)
	for _, tc := range []struct {
		url, key string
		want     int
	}{
		{e.PlainURL, e.Key, http.StatusOK},
		{e.GatewayURL, e.Key, http.StatusOK},
		{e.PlainURL, "sk-wrong", http.StatusOK},
		{e.GatewayURL, "sk-wrong", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tc.url+chatPath, bytes.NewReader(body))
		req.Header = requestHeader(tc.key)
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			return fmt.Errorf("check %s with key %s: status %d, want %d: %s", tc.url, tc.key[:6], res.StatusCode, tc.want, got)
		}
		if tc.want == http.StatusOK && !bytes.Contains(got, []byte(okMarker)) {
			return fmt.Errorf("check %s: unexpected body %s", tc.url, got)
		}
	}
	return nil
}

// Close stops Caddy and the upstream and removes a temporary directory.
func (e *Env) Close() {
	e.closeOnce.Do(func() {
		_ = caddy.Stop()
		if e.upSrv != nil {
			_ = e.upSrv.Close()
		}
		if e.ownDir {
			_ = os.RemoveAll(e.dir)
		}
		caddyMu.Unlock()
	})
}

const (
	chatPath = "/v1/chat/completions"
	// okMarker is in every successful non-stream answer from the upstream.
	okMarker = `"object":"chat.completion"`
	// doneMarker ends every complete OpenAI stream.
	doneMarker = "data: [DONE]"
)

// chatBody is a typical small chat request; the streaming one asks for
// the usage chunk, as SDK users who track spend do.
func chatBody(stream bool) []byte {
	if stream {
		return []byte(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)
	}
	return []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)
}

func requestHeader(key string) http.Header {
	return http.Header{
		"Authorization": {"Bearer " + key},
		"Content-Type":  {"application/json"},
	}
}
