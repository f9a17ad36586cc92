// Package spend meters LLM traffic: it reads token usage from provider
// responses (JSON bodies and SSE streams), prices it exactly in pico-USD,
// and keeps per-key and per-user spend with budgets in an in-memory ledger
// that writes behind to the store.
//
// Nothing here does I/O on the request path and nothing imports Caddy; the
// Caddy handler wires these pieces together:
//
//	f, _ := spend.FormatForPath(r.URL.Path)
//	info, err := spend.InspectRequest(f, body)          // 400 on err
//	res, berr := ledger.Reserve(keyID, userID, spend.EstimateCost(f, price, info)) // 429 on berr
//	... proxy; on a non-2xx answer: ledger.Release(res) (not billed)
//	... for JSON: u, ok := spend.ExtractJSON(f, respBody)
//	... for SSE:  m := spend.NewStreamMeter(f, strip, info.PromptEstimate); m.Write(chunk, emit); m.Finish(emit); u := m.Result()
//	ledger.Commit(res, spend.Cost(f, price, u), u.Model, u.TotalInputTokens(f), u.OutputTokens)
package spend

import "strings"

// Format is the wire format of an upstream API, which decides where usage
// is found and how cached tokens are counted.
type Format uint8

const (
	// FormatUnknown is the zero value: not a metered route.
	FormatUnknown Format = iota
	// OpenAIChat is POST /v1/chat/completions.
	OpenAIChat
	// OpenAICompletions is POST /v1/completions (legacy text completions).
	OpenAICompletions
	// OpenAIEmbeddings is POST /v1/embeddings.
	OpenAIEmbeddings
	// OpenAIResponses is POST /v1/responses.
	OpenAIResponses
	// AnthropicMessages is POST /v1/messages.
	AnthropicMessages
)

var formatNames = [...]string{"unknown", "openai_chat", "openai_completions", "openai_embeddings", "openai_responses", "anthropic_messages"}

// String returns a stable lower-case name, for logs and metric labels.
func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "unknown"
}

// OpenAIStyle reports whether input token counts include cached tokens
// (every OpenAI format), as opposed to Anthropic's disjoint counts.
func (f Format) OpenAIStyle() bool {
	return f >= OpenAIChat && f <= OpenAIResponses
}

// FormatForPath maps a request path to its format. Both "/v1/x" and "/x"
// are accepted, with or without one trailing slash.
func FormatForPath(path string) (Format, bool) {
	path = strings.TrimSuffix(path, "/")
	path = strings.TrimPrefix(path, "/v1")
	switch path {
	case "/chat/completions":
		return OpenAIChat, true
	case "/completions":
		return OpenAICompletions, true
	case "/embeddings":
		return OpenAIEmbeddings, true
	case "/responses":
		return OpenAIResponses, true
	case "/messages":
		return AnthropicMessages, true
	}
	return FormatUnknown, false
}

// Usage is the token usage of one request, as reported by the provider.
//
// The meaning of InputTokens depends on the Format, exactly as the
// providers report it; Cost applies the right rule, so callers never need to
// adjust it:
//   - OpenAI formats (chat, completions, embeddings, Responses):
//     InputTokens is prompt_tokens / input_tokens and INCLUDES the cached
//     tokens (CachedInputTokens is a subset of it). CacheCreationTokens is
//     always 0. OutputTokens (completion_tokens / output_tokens) INCLUDES
//     ReasoningTokens, which are informational only.
//   - AnthropicMessages: InputTokens EXCLUDES cache reads and writes;
//     CachedInputTokens is cache_read_input_tokens and CacheCreationTokens
//     is cache_creation_input_tokens, both charged on top.
//     CacheCreation1hTokens is the part of CacheCreationTokens written with
//     the 1-hour TTL (cache_creation.ephemeral_1h_input_tokens), which
//     Anthropic charges at a higher rate; 0 for every OpenAI format.
//
// Estimated is true when the numbers were reconstructed from a stream that
// ended before its usage event (prompt estimate + counted output).
type Usage struct {
	Model               string
	InputTokens         int64
	CachedInputTokens   int64
	CacheCreationTokens int64
	// CacheCreation1hTokens is included in CacheCreationTokens.
	CacheCreation1hTokens int64
	OutputTokens          int64
	ReasoningTokens       int64
	Estimated             bool
}

// TotalInputTokens returns every prompt token the request consumed,
// cached or not, whatever the format (for daily aggregates and metrics).
func (u Usage) TotalInputTokens(f Format) int64 {
	if f == AnthropicMessages {
		return u.InputTokens + u.CachedInputTokens + u.CacheCreationTokens
	}
	return u.InputTokens
}

// ExtractJSON reads the model and the usage block of a non-streaming
// response body (already decompressed). ok is false when the body has no
// top-level "usage" object or is not a JSON object.
//
// It walks only the top level and the usage object, skipping everything
// else without decoding; on valid JSON the result equals decoding with
// encoding/json (exact key match, last duplicate wins; token counts that are
// not non-negative integers count as 0).
func ExtractJSON(f Format, body []byte) (Usage, bool) {
	s := scanner{b: body}
	var u Usage
	found := false
	if !s.open() {
		return Usage{}, false
	}
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		switch string(k) {
		case "model":
			u.Model = s.string()
		case "usage":
			found = s.usage(f, &u)
		default:
			s.skip()
		}
		if s.bad {
			return Usage{}, false
		}
	}
	if s.bad || !found {
		return Usage{}, false
	}
	return u, true
}

// usage consumes a usage value into u's token fields (resetting them first:
// the last "usage" member wins) and reports whether it was an object.
func (s *scanner) usage(f Format, u *Usage) bool {
	u.InputTokens, u.CachedInputTokens, u.CacheCreationTokens, u.CacheCreation1hTokens, u.OutputTokens, u.ReasoningTokens = 0, 0, 0, 0, 0, 0
	if !s.open() {
		return false
	}
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		switch f {
		case AnthropicMessages:
			switch string(k) {
			case "input_tokens":
				u.InputTokens = s.int()
			case "output_tokens":
				u.OutputTokens = s.int()
			case "cache_read_input_tokens":
				u.CachedInputTokens = s.int()
			case "cache_creation_input_tokens":
				u.CacheCreationTokens = s.int()
			case "cache_creation":
				u.CacheCreation1hTokens = s.detail("ephemeral_1h_input_tokens")
			default:
				s.skip()
			}
		case OpenAIResponses:
			switch string(k) {
			case "input_tokens":
				u.InputTokens = s.int()
			case "output_tokens":
				u.OutputTokens = s.int()
			case "input_tokens_details":
				u.CachedInputTokens = s.detail("cached_tokens")
			case "output_tokens_details":
				u.ReasoningTokens = s.detail("reasoning_tokens")
			default:
				s.skip()
			}
		default: // chat, completions, embeddings
			switch string(k) {
			case "prompt_tokens":
				u.InputTokens = s.int()
			case "completion_tokens":
				u.OutputTokens = s.int()
			case "prompt_tokens_details":
				u.CachedInputTokens = s.detail("cached_tokens")
			case "completion_tokens_details":
				u.ReasoningTokens = s.detail("reasoning_tokens")
			default:
				s.skip()
			}
		}
		if s.bad {
			return false
		}
	}
	return !s.bad
}

// detail consumes a *_details object and returns its member name as a count.
func (s *scanner) detail(name string) int64 {
	var v int64
	if !s.open() {
		return 0
	}
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		if string(k) == name {
			v = s.int()
		} else {
			s.skip()
		}
		if s.bad {
			return 0
		}
	}
	return v
}
