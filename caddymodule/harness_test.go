package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/llmspend/llmspend/fakeupstream"
)

const testMasterKey = "sk-master-test-1234"

// gateway is an in-process Caddy running a test Caddyfile. Caddy is a
// process-wide singleton, so tests using it don't run in parallel.
type gateway struct {
	t        *testing.T
	port     int
	base     string
	dbPath   string
	upstream *fakeupstream.Server
	upURL    string
	extra    string // extra lines in the llm_spend global block
	client   *http.Client
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newGateway starts a fake upstream and Caddy with llm_spend in front of it.
func newGateway(t *testing.T, extra string) *gateway {
	t.Helper()
	up := fakeupstream.New()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	g := &gateway{
		t:        t,
		port:     freePort(t),
		dbPath:   filepath.Join(t.TempDir(), "llmspend.db"),
		upstream: up,
		upURL:    srv.URL,
		extra:    extra,
		// No keep-alive: a connection the old server accepted just before a
		// reload would be closed under the next request.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	g.base = fmt.Sprintf("http://127.0.0.1:%d", g.port)
	g.load()
	t.Cleanup(func() { _ = caddy.Stop() })
	return g
}

func (g *gateway) caddyfile() string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level %s
	}
	storage file_system %s
	llm_spend {
		master_key %s
		store %s
		%s
	}
}
http://127.0.0.1:%d {
	@nov1 path /chat/completions /completions /embeddings /responses /messages
	rewrite @nov1 /v1{path}
	handle /v1/* {
		llm_spend
		reverse_proxy %s {
			header_up Authorization "Bearer sk-upstream-real-openai"
			header_up x-api-key sk-upstream-real-anthropic
		}
	}
	handle {
		llm_spend_admin
		respond "no such route" 404
	}
}
`, caddyLogLevel(), filepath.Join(filepath.Dir(g.dbPath), "caddydata"), testMasterKey, g.dbPath, g.extra, g.port, g.upURL)
}

// load (re)loads the config: the first call starts Caddy, later calls are a reload.
func (g *gateway) load() {
	g.t.Helper()
	g.loadText(g.caddyfile())
}

func (g *gateway) loadText(cf string) {
	g.t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfgJSON, warn, err := adapter.Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		g.t.Fatalf("adapting Caddyfile: %v", err)
	}
	_ = warn // formatting warnings only
	if err := caddy.Load(cfgJSON, true); err != nil {
		g.t.Fatalf("loading config: %v", err)
	}
	// A reload closes the old server's idle connections; don't reuse them,
	// and wait until the new server answers on a fresh connection.
	g.client.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := g.client.Get(g.base + "/health/liveliness")
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not answering after load: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops Caddy completely (the shared state is destroyed and the
// store closed) and starts it again on the same database file.
func (g *gateway) restart() {
	g.t.Helper()
	if err := caddy.Stop(); err != nil {
		g.t.Fatalf("stopping caddy: %v", err)
	}
	if n := countStates(); n != 0 {
		g.t.Fatalf("%d shared states still alive after stop", n)
	}
	g.load()
}

// caddyLogLevel keeps Caddy quiet in tests unless LLMSPEND_TEST_LOG is set.
func caddyLogLevel() string {
	if v := os.Getenv("LLMSPEND_TEST_LOG"); v != "" {
		return v
	}
	return "ERROR"
}

func countStates() int {
	n := 0
	states.Range(func(_, _ any) bool { n++; return true })
	return n
}

type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.Body)
	}
	return m
}

// do sends a request; auth is the full Authorization header value or "" for none.
func (g *gateway) do(method, path string, headers map[string]string, body any) resp {
	g.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: data}
}

func bearer(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }

// admin calls an admin route with the master key.
func (g *gateway) admin(method, path string, body any) resp {
	g.t.Helper()
	return g.do(method, path, bearer(testMasterKey), body)
}

// mustAdmin calls an admin route and requires 200.
func (g *gateway) mustAdmin(method, path string, body any) map[string]any {
	g.t.Helper()
	r := g.admin(method, path, body)
	if r.Status != http.StatusOK {
		g.t.Fatalf("%s %s: status %d: %s", method, path, r.Status, r.Body)
	}
	return r.json(g.t)
}

// newKey creates a key and returns the plain key.
func (g *gateway) newKey(fields map[string]any) string {
	g.t.Helper()
	out := g.mustAdmin("POST", "/key/generate", fields)
	k, _ := out["key"].(string)
	if !strings.HasPrefix(k, "sk-") {
		g.t.Fatalf("no key in response: %v", out)
	}
	return k
}

func (g *gateway) chat(key, model string) resp {
	g.t.Helper()
	return g.do("POST", "/v1/chat/completions", bearer(key), map[string]any{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": "hi"}},
	})
}

// errorBody decodes an OpenAI-shaped error.
func errorBody(t *testing.T, r resp) apiError {
	t.Helper()
	var e struct {
		Error apiError `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("not an error body: %v: %s", err, r.Body)
	}
	return e.Error
}

func TestMain(m *testing.M) {
	// Keep Caddy's own data (autosave, instance id) out of the user's home.
	dir, err := os.MkdirTemp("", "llmspend-caddy")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loadErr adapts and loads a Caddyfile and returns the error, if any.
func loadErr(cf string) error {
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return err
	}
	return caddy.Load(cfgJSON, true)
}
