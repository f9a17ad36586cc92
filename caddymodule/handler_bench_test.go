package caddymodule

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/sqlite"
)

// benchHandler builds a Handler over a real SQLite store with one key in
// the cache, without Caddy around it.
func benchHandler(b *testing.B) (*Handler, string) {
	b.Helper()
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	plain := newPlainKey()
	now := time.Now().UTC()
	k := store.Key{ID: newID(), Token: tokenHex(hashKey(plain)), KeyName: redactKey(plain), CreatedAt: now, UpdatedAt: now}
	if err := st.CreateKey(b.Context(), &k); err != nil {
		b.Fatal(err)
	}
	s := &sharedState{store: st, keys: newKeyCache(st), logger: zap.NewNop()}
	if err := s.keys.load(b.Context()); err != nil {
		b.Fatal(err)
	}
	// Metered paths reserve and commit in the ledger and price the model.
	s.ledger = spend.NewLedger(spend.LedgerConfig{Writer: st})
	b.Cleanup(func() { _ = s.ledger.Close(context.Background()) })
	h := &Handler{app: &App{MaxRequestBody: defaultMaxRequestBody, prices: spend.DefaultPrices()}, state: s, logger: zap.NewNop(), now: time.Now}
	return h, plain
}

var nextOK = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	_, _ = io.Copy(io.Discard, r.Body)
	return nil
})

// BenchmarkAuthCacheHit measures authentication of a known key (hash +
// cache look-up + header removal) on a non-metered path.
func BenchmarkAuthCacheHit(b *testing.B) {
	h, plain := benchHandler(b)
	req := httptest.NewRequest("GET", "/v1/models", nil)
	w := httptest.NewRecorder()
	auth := []string{"Bearer " + plain}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header["Authorization"] = auth // the handler deletes it each time
		if err := h.ServeHTTP(w, req, nextOK); err != nil {
			b.Fatal(err)
		}
	}
	if w.Code != 200 {
		b.Fatalf("status %d", w.Code)
	}
}

// BenchmarkAuthAndInspect adds reading and inspecting a chat request body.
func BenchmarkAuthAndInspect(b *testing.B) {
	h, plain := benchHandler(b)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+plain)
		if err := h.ServeHTTP(w, req, nextOK); err != nil {
			b.Fatal(err)
		}
	}
	if w.Code != 200 {
		b.Fatalf("status %d", w.Code)
	}
}
