package caddymodule

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// chatResponse is an upstream chat completion with a usage block.
var chatResponse = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Gateways hum softly"},"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":12,"total_tokens":37}}`)

var nextChat = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(chatResponse)
	return err
})

// BenchmarkMeteredJSON is the full request path of a billed non-streaming
// call: auth, inspect, reserve, meter the response, commit (and, with
// metrics, count it).
func BenchmarkMeteredJSON(b *testing.B) {
	h, plain := benchHandler(b)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)
	auth := "Bearer " + plain
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		if err := h.ServeHTTP(w, req, nextChat); err != nil {
			b.Fatal(err)
		}
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
