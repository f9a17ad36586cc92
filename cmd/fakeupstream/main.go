// Command fakeupstream serves the OpenAI and Anthropic wire formats with
// fixed usage blocks, for trying the gateway without a provider account:
//
//	go run ./cmd/fakeupstream -listen 127.0.0.1:9999
//	OPENAI_API_BASE=http://127.0.0.1:9999 ANTHROPIC_API_BASE=http://127.0.0.1:9999 \
//	  MASTER_KEY=... go run ./cmd/caddy run --config Caddyfile.example
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/llmspend/llmspend/fakeupstream"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9999", "address to listen on")
	in := flag.Int64("input-tokens", 23, "prompt tokens reported per response")
	out := flag.Int64("output-tokens", 41, "completion tokens reported per response")
	latency := flag.Duration("latency", 0, "delay before each response")
	flag.Parse()
	s := fakeupstream.New()
	s.Record = false
	s.Latency = *latency
	s.Usage = fakeupstream.Usage{InputTokens: *in, OutputTokens: *out}
	srv := &http.Server{Addr: *listen, Handler: s, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("fake upstream on http://%s", *listen)
	log.Fatal(srv.ListenAndServe())
}
