// Package fakeupstream is an HTTP server that speaks the OpenAI and
// Anthropic wire formats with realistic usage blocks, for tests and the
// load-test harness. It records what it receives so tests can check that a
// virtual key never reaches an upstream.
package fakeupstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Usage is what the fake upstream reports for every response.
type Usage struct {
	InputTokens         int64 // OpenAI prompt_tokens (includes cached); Anthropic input_tokens (excludes cache)
	CachedTokens        int64 // OpenAI cached_tokens; Anthropic cache_read_input_tokens
	CacheCreationTokens int64 // Anthropic cache_creation_input_tokens
	OutputTokens        int64
	ReasoningTokens     int64
}

// Recorded is one request the upstream received.
type Recorded struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// Server is the fake upstream. Configure it before serving; fields are read
// on every request under a lock so tests may change them between requests.
type Server struct {
	mu sync.Mutex
	// Usage reported in responses.
	Usage Usage
	// Status, when not 0 or 200, makes every response an error with this status.
	Status int
	// Latency is slept before answering.
	Latency time.Duration
	// ChunkDelay is slept between stream events.
	ChunkDelay time.Duration
	// FirstChunkDelay is slept after a stream's headers are sent and
	// before its first event: a model's time to first token. Latency, by
	// contrast, delays the headers too.
	FirstChunkDelay time.Duration
	// Chunks is the number of content events in a stream (default 3).
	Chunks int
	// CutStream ends a stream before the usage event.
	CutStream bool
	// Gzip compresses non-stream JSON responses (Content-Encoding: gzip).
	Gzip bool
	// Record keeps received requests (off for load tests).
	Record bool
	// Raw, when set, is sent as the whole 200 response body with
	// RawContentType, whatever was asked: malformed upstream output.
	Raw            []byte
	RawContentType string
	// Prerender reuses rendered non-stream bodies (per path, model, usage
	// and gzip), so a load test measures the proxy, not fmt.Sprintf.
	Prerender bool

	rendered  sync.Map // renderKey -> []byte, when Prerender is set
	nRendered atomic.Int32

	received []Recorded
	// Gate, when non-nil, is received from between stream events (tests use
	// it to release events one by one).
	Gate chan struct{}
}

// New returns a recording server with a default usage block.
func New() *Server {
	return &Server{Record: true, Chunks: 3, Usage: Usage{InputTokens: 23, OutputTokens: 41}}
}

// Received returns a copy of the recorded requests.
func (s *Server) Received() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Recorded(nil), s.received...)
}

// Set changes the configuration under the lock.
func (s *Server) Set(f func(s *Server)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

type reqFields struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	if s.Record {
		s.received = append(s.received, Recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	}
	u, status, latency, delay, chunks, cut, gz, gate := s.Usage, s.Status, s.Latency, s.ChunkDelay, s.Chunks, s.CutStream, s.Gzip, s.Gate
	first, prerender := s.FirstChunkDelay, s.Prerender
	raw, rawType := s.Raw, s.RawContentType
	s.mu.Unlock()
	if raw != nil {
		w.Header().Set("Content-Type", rawType)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(raw)
		return
	}
	if latency > 0 {
		time.Sleep(latency)
	}
	var req reqFields
	_ = json.Unmarshal(body, &req)
	if req.Model == "" {
		req.Model = "gpt-4o-mini"
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	if status != 0 && status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"message":"upstream error %d","type":"server_error","param":null,"code":null}}`, status)
		return
	}
	if chunks <= 0 {
		chunks = 3
	}
	if req.Stream {
		st := stream{w: w, delay: delay, first: first, gate: gate}
		switch path {
		case "/chat/completions":
			st.openAIChat(req, u, chunks, cut)
			return
		case "/completions":
			st.openAICompletions(req, u, chunks, cut)
			return
		case "/responses":
			st.responses(req, u, chunks, cut)
			return
		case "/messages":
			st.anthropic(req, u, chunks, cut)
			return
		}
	}
	k := renderKey{path, req.Model, u, gz}
	if prerender && s.writeRendered(w, k) {
		return
	}
	s.render(w, k)
}

func openAIChatJSON(model string, u Usage) string {
	return fmt.Sprintf(`{"id":"chatcmpl-abc123","object":"chat.completion","created":1733000000,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":%d,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_0ba0d124f1"}`,
		model, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens, u.CachedTokens, u.ReasoningTokens)
}

func responsesJSON(model string, u Usage) string {
	return fmt.Sprintf(`{"id":"resp_67ccd2bed1ec8190","object":"response","created_at":1741476542,"status":"completed","model":%q,"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there.","annotations":[]}]}],"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}}`,
		model, u.InputTokens, u.CachedTokens, u.OutputTokens, u.ReasoningTokens, u.InputTokens+u.OutputTokens)
}

func anthropicJSON(model string, u Usage) string {
	if model == "" || model == "gpt-4o-mini" {
		model = "claude-3-5-haiku-20241022"
	}
	return fmt.Sprintf(`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":%q,"content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":%d,"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d,"output_tokens":%d}}`,
		model, u.InputTokens, u.CacheCreationTokens, u.CachedTokens, u.OutputTokens)
}

func writeJSON(w http.ResponseWriter, gz bool, body string) {
	w.Header().Set("Content-Type", "application/json")
	if gz {
		b := gzipBytes([]byte(body))
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, body)
}

type stream struct {
	w     http.ResponseWriter
	delay time.Duration
	first time.Duration
	gate  chan struct{}
	n     int
}

func (s *stream) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	s.w.WriteHeader(http.StatusOK)
	if s.first > 0 {
		// Headers go out before the model's first token, as providers do.
		if f, ok := s.w.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(s.first)
	}
}

// event writes one SSE event and flushes it.
func (s *stream) event(name, data string) {
	if s.n > 0 {
		if s.gate != nil {
			<-s.gate
		}
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
	}
	s.n++
	if name != "" {
		fmt.Fprintf(s.w, "event: %s\n", name)
	}
	fmt.Fprintf(s.w, "data: %s\n\n", data)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *stream) openAIChat(req reqFields, u Usage, chunks int, cut bool) {
	s.start()
	withUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	usageNull := ""
	if withUsage {
		usageNull = `,"usage":null`
	}
	s.event("", fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":%q,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]%s}`, req.Model, usageNull))
	for i := 0; i < chunks; i++ {
		s.event("", fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":%q,"choices":[{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]%s}`, req.Model, i, usageNull))
	}
	if cut {
		return
	}
	s.event("", fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":%q,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]%s}`, req.Model, usageNull))
	if withUsage {
		s.event("", fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":%q,"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d},"completion_tokens_details":{"reasoning_tokens":%d}}}`,
			req.Model, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens, u.CachedTokens, u.ReasoningTokens))
	}
	s.event("", "[DONE]")
}

func (s *stream) openAICompletions(req reqFields, u Usage, chunks int, cut bool) {
	s.start()
	withUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	for i := 0; i < chunks; i++ {
		s.event("", fmt.Sprintf(`{"id":"cmpl-1","object":"text_completion","created":1733000000,"model":%q,"choices":[{"text":"tok%d ","index":0,"logprobs":null,"finish_reason":null}]}`, req.Model, i))
	}
	if cut {
		return
	}
	if withUsage {
		s.event("", fmt.Sprintf(`{"id":"cmpl-1","object":"text_completion","created":1733000000,"model":%q,"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			req.Model, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens))
	}
	s.event("", "[DONE]")
}

func (s *stream) responses(req reqFields, u Usage, chunks int, cut bool) {
	s.start()
	s.event("response.created", fmt.Sprintf(`{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","model":%q,"usage":null}}`, req.Model))
	for i := 0; i < chunks; i++ {
		s.event("response.output_text.delta", fmt.Sprintf(`{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"tok%d "}`, i))
	}
	if cut {
		return
	}
	s.event("response.completed", fmt.Sprintf(`{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":%q,"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}}}`,
		req.Model, u.InputTokens, u.CachedTokens, u.OutputTokens, u.ReasoningTokens, u.InputTokens+u.OutputTokens))
}

func (s *stream) anthropic(req reqFields, u Usage, chunks int, cut bool) {
	s.start()
	model := req.Model
	if model == "" || model == "gpt-4o-mini" {
		model = "claude-3-5-haiku-20241022"
	}
	s.event("message_start", fmt.Sprintf(`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":%q,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":%d,"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d,"output_tokens":1}}}`,
		model, u.InputTokens, u.CacheCreationTokens, u.CachedTokens))
	s.event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	for i := 0; i < chunks; i++ {
		s.event("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok%d "}}`, i))
	}
	if cut {
		return
	}
	s.event("content_block_stop", `{"type":"content_block_stop","index":0}`)
	s.event("message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":%d}}`, u.OutputTokens))
	s.event("message_stop", `{"type":"message_stop"}`)
}

// renderKey identifies a pre-rendered non-stream response.
type renderKey struct {
	path, model string
	u           Usage
	gz          bool
}

// maxRendered bounds the pre-rendered bodies: models come from clients.
const maxRendered = 256

// writeRendered writes the cached body for k, rendering it once through
// ServeHTTP's own code on first use. It reports false when the body can't
// be cached (cache full), and the caller renders as usual.
func (s *Server) writeRendered(w http.ResponseWriter, k renderKey) bool {
	v, ok := s.rendered.Load(k)
	if !ok {
		if s.nRendered.Load() >= maxRendered {
			return false
		}
		rec := &captureWriter{h: http.Header{}}
		s.render(rec, k)
		v, ok = s.rendered.LoadOrStore(k, &rendered{header: rec.h, status: rec.status, body: rec.buf.Bytes()})
		if !ok {
			s.nRendered.Add(1)
		}
	}
	r := v.(*rendered)
	h := w.Header()
	for name, vals := range r.header {
		h[name] = vals
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
	return true
}

// rendered is a complete response kept for reuse; it is never modified.
type rendered struct {
	header http.Header
	status int
	body   []byte
}

// render produces the non-stream response for k the way ServeHTTP does.
func (s *Server) render(w http.ResponseWriter, k renderKey) {
	u := k.u
	switch k.path {
	case "/chat/completions":
		writeJSON(w, k.gz, openAIChatJSON(k.model, u))
	case "/completions":
		writeJSON(w, k.gz, fmt.Sprintf(`{"id":"cmpl-1","object":"text_completion","created":1733000000,"model":%q,"choices":[{"text":"Hello there","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			k.model, u.InputTokens, u.OutputTokens, u.InputTokens+u.OutputTokens))
	case "/embeddings":
		writeJSON(w, k.gz, fmt.Sprintf(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093,0.0151]}],"model":%q,"usage":{"prompt_tokens":%d,"total_tokens":%d}}`,
			k.model, u.InputTokens, u.InputTokens))
	case "/responses":
		writeJSON(w, k.gz, responsesJSON(k.model, u))
	case "/messages":
		writeJSON(w, k.gz, anthropicJSON(k.model, u))
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"}]}`)
	}
}

// captureWriter records a response for render.
type captureWriter struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.h }
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.buf.Write(b)
}
