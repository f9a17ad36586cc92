package spend

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

const chatBody = `{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk extending through a lush green marshland. \"quoted\" \\ {not json}",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {
      "cached_tokens": 200,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 64,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}`

const responsesBody = `{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"o4-mini-2025-04-16","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":"medium","summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":1536,"input_tokens_details":{"cached_tokens":1024},"output_tokens":870,"output_tokens_details":{"reasoning_tokens":768},"total_tokens":2406},"user":null,"metadata":{}}`

const anthropicBody = `{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":2051,"cache_read_input_tokens":1800,"cache_creation":{"ephemeral_5m_input_tokens":2000,"ephemeral_1h_input_tokens":51},"service_tier":"standard"}}`

const embeddingsBody = `{"object":"list","data":[{"object":"embedding","embedding":[0.0023064255,-0.009327292,-0.0028842222],"index":0}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`

const completionsBody = `{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`

func TestExtractJSON(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		body string
		want Usage
		ok   bool
	}{
		{"chat cached+reasoning", OpenAIChat, chatBody, Usage{Model: "gpt-4o-mini-2024-07-18", InputTokens: 1000, CachedInputTokens: 200, OutputTokens: 500, ReasoningTokens: 64}, true},
		{"responses", OpenAIResponses, responsesBody, Usage{Model: "o4-mini-2025-04-16", InputTokens: 1536, CachedInputTokens: 1024, OutputTokens: 870, ReasoningTokens: 768}, true},
		{"anthropic", AnthropicMessages, anthropicBody, Usage{Model: "claude-3-5-haiku-20241022", InputTokens: 2095, CachedInputTokens: 1800, CacheCreationTokens: 2051, CacheCreation1hTokens: 51, OutputTokens: 503}, true},
		{"embeddings", OpenAIEmbeddings, embeddingsBody, Usage{Model: "text-embedding-3-small", InputTokens: 8}, true},
		{"completions", OpenAICompletions, completionsBody, Usage{Model: "gpt-3.5-turbo-instruct", InputTokens: 5, OutputTokens: 7}, true},
		{"no usage", OpenAIChat, `{"model":"gpt-4o","choices":[]}`, Usage{}, false},
		{"usage null", OpenAIChat, `{"model":"gpt-4o","usage":null}`, Usage{}, false},
		{"not object", OpenAIChat, `[1,2]`, Usage{}, false},
		{"garbage", OpenAIChat, `{"usage":{"prompt_tokens":`, Usage{}, false},
		{"empty", OpenAIChat, ``, Usage{}, false},
		{"last duplicate wins", OpenAIChat, `{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":3}}`, Usage{InputTokens: 3}, true},
		{"escaped key and model", OpenAIChat, `{"mod\u0065l":"gpt-4\u006f","\u0075sage":{"prompt_tokens":7}}`, Usage{Model: "gpt-4o", InputTokens: 7}, true},
		{"non integer counts", OpenAIChat, `{"usage":{"prompt_tokens":1.5,"completion_tokens":-3,"prompt_tokens_details":{"cached_tokens":"2"}}}`, Usage{}, true},
		{"wrong format fields ignored", AnthropicMessages, `{"usage":{"prompt_tokens":9,"input_tokens":4}}`, Usage{InputTokens: 4}, true},
		{"nested usage ignored", OpenAIChat, `{"choices":[{"usage":{"prompt_tokens":9}}],"usage":{"prompt_tokens":4}}`, Usage{InputTokens: 4}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ExtractJSON(tt.f, []byte(tt.body))
			if ok != tt.ok || got != tt.want {
				t.Fatalf("ExtractJSON = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFormatForPath(t *testing.T) {
	for path, want := range map[string]Format{
		"/v1/chat/completions": OpenAIChat, "/chat/completions": OpenAIChat, "/v1/chat/completions/": OpenAIChat,
		"/v1/completions": OpenAICompletions, "/completions": OpenAICompletions,
		"/v1/embeddings": OpenAIEmbeddings, "/embeddings": OpenAIEmbeddings,
		"/v1/responses": OpenAIResponses, "/responses": OpenAIResponses,
		"/v1/messages": AnthropicMessages, "/messages": AnthropicMessages,
	} {
		if got, ok := FormatForPath(path); !ok || got != want {
			t.Errorf("FormatForPath(%q) = %v, %v; want %v", path, got, ok, want)
		}
	}
	for _, path := range []string{"", "/", "/v1", "/v1/models", "/v2/chat/completions", "/v1/messages/count_tokens", "/v1/v1/messages"} {
		if f, ok := FormatForPath(path); ok {
			t.Errorf("FormatForPath(%q) = %v, want not found", path, f)
		}
	}
}

// oracleUsage decodes body with encoding/json the way ExtractJSON promises
// to read it.
func oracleUsage(f Format, body []byte) (Usage, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return Usage{}, false
	}
	top, ok := v.(map[string]any)
	if !ok {
		return Usage{}, false
	}
	var u Usage
	u.Model, _ = top["model"].(string)
	um, ok := top["usage"].(map[string]any)
	if !ok {
		return Usage{}, false
	}
	count := func(m map[string]any, k string) int64 {
		n, ok := m[k].(json.Number)
		if !ok {
			return 0
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || i < 0 {
			return 0
		}
		return i
	}
	sub := func(k string) map[string]any { m, _ := um[k].(map[string]any); return m }
	switch f {
	case AnthropicMessages:
		u.InputTokens = count(um, "input_tokens")
		u.OutputTokens = count(um, "output_tokens")
		u.CachedInputTokens = count(um, "cache_read_input_tokens")
		u.CacheCreationTokens = count(um, "cache_creation_input_tokens")
		u.CacheCreation1hTokens = count(sub("cache_creation"), "ephemeral_1h_input_tokens")
	case OpenAIResponses:
		u.InputTokens = count(um, "input_tokens")
		u.OutputTokens = count(um, "output_tokens")
		u.CachedInputTokens = count(sub("input_tokens_details"), "cached_tokens")
		u.ReasoningTokens = count(sub("output_tokens_details"), "reasoning_tokens")
	default:
		u.InputTokens = count(um, "prompt_tokens")
		u.OutputTokens = count(um, "completion_tokens")
		u.CachedInputTokens = count(sub("prompt_tokens_details"), "cached_tokens")
		u.ReasoningTokens = count(sub("completion_tokens_details"), "reasoning_tokens")
	}
	return u, true
}

func FuzzExtractJSON(f *testing.F) {
	for _, b := range []string{chatBody, responsesBody, anthropicBody, embeddingsBody, completionsBody,
		`{"usage":{"prompt_tokens":1},"usage":null}`, `{"model":"a\ud83d\ude00\"","usage":{"prompt_tokens_details":{"cached_tokens":3,"cached_tokens":4}}}`,
		`{"usage":{"prompt_tokens":-0,"completion_tokens":99999999999999999999}}`, "{\"model\":\"\xff\",\"usage\":{}}"} {
		for fm := OpenAIChat; fm <= AnthropicMessages; fm++ {
			f.Add(uint8(fm), []byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, fm uint8, body []byte) {
		fmt := Format(fm%5 + 1)
		got, ok := ExtractJSON(fmt, body)
		if !json.Valid(body) {
			return // only "no panic" is promised
		}
		want, wok := oracleUsage(fmt, body)
		if ok != wok || got != want {
			t.Fatalf("format %v body %q:\n got %+v %v\nwant %+v %v", fmt, body, got, ok, want, wok)
		}
	})
}

func TestInspectRequest(t *testing.T) {
	body := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"max_completion_tokens":300,"messages":[{"role":"user","content":"` + strings.Repeat("x", 400) + `"}]}`
	info, err := InspectRequest(OpenAIChat, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if info.Model != "gpt-4o-mini" || !info.Stream || !info.IncludeUsage || info.MaxTokens != 300 {
		t.Fatalf("info = %+v", info)
	}
	if info.PromptEstimate < 100 || info.PromptEstimate > 120 {
		t.Fatalf("PromptEstimate = %d, want about 110", info.PromptEstimate)
	}
	info, err = InspectRequest(OpenAIResponses, []byte(`{"model":"o3","input":"hi","max_output_tokens":50,"stream":"yes"}`))
	if err != nil || info.Stream || info.MaxTokens != 50 || info.IncludeUsage || info.PromptEstimate != 1 {
		t.Fatalf("info = %+v err %v", info, err)
	}
	info, err = InspectRequest(AnthropicMessages, []byte(`{"model":"claude-sonnet-4-20250514","max_tokens":1024,"system":"be brief","messages":[],"stream":true}`))
	if err != nil || !info.Stream || info.MaxTokens != 1024 || info.Model != "claude-sonnet-4-20250514" {
		t.Fatalf("info = %+v err %v", info, err)
	}
	for _, bad := range []string{``, `{`, `[]`, `"x"`, `{"model":}`, `{"a":1}x`, `{"a":1,}`, `null`} {
		if _, err := InspectRequest(OpenAIChat, []byte(bad)); err == nil {
			t.Errorf("InspectRequest(%q) accepted malformed body", bad)
		}
	}
}

func FuzzInspectRequest(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":5,"messages":[]}`))
	f.Add([]byte(`{"stream_options":null,"stream":false,"max_output_tokens":1e3}`))
	f.Add([]byte(`{"model":"a","model":"b","stream":true,"stream":false}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info, err := InspectRequest(OpenAIChat, body)
		var top map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		valid := json.Valid(body) && dec.Decode(&top) == nil && top != nil
		if valid != (err == nil) {
			t.Fatalf("body %q: err %v, valid %v", body, err, valid)
		}
		if !valid {
			return
		}
		model, _ := top["model"].(string)
		stream, _ := top["stream"].(bool)
		so, _ := top["stream_options"].(map[string]any)
		iu, _ := so["include_usage"].(bool)
		if info.Model != model || info.Stream != stream || info.IncludeUsage != iu || info.PromptEstimate < 0 || info.MaxTokens < 0 {
			t.Fatalf("body %q: info %+v", body, info)
		}
		// Injection must keep the body valid and make include_usage true.
		out, changed := InjectIncludeUsage(body)
		if changed == iu {
			t.Fatalf("body %q: changed=%v with include_usage=%v", body, changed, iu)
		}
		info2, err := InspectRequest(OpenAIChat, out)
		if err != nil || !info2.IncludeUsage || info2.Model != info.Model || info2.Stream != info.Stream || info2.MaxTokens != info.MaxTokens {
			t.Fatalf("inject %q -> %q: %+v %v", body, out, info2, err)
		}
	})
}

func TestInjectIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"model":"gpt-4o","stream":true}`, `{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true}`},
		{` {}`, ` {"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"x":1}}`, `{"stream":true,"stream_options":{"include_usage":true,"x":1}}`},
		{`{"stream":true,"stream_options": {"include_usage":false}}`, `{"stream":true,"stream_options": {"include_usage":true}}`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream_options":{"include_usage":true},"stream_options":{"include_usage":null}}`, `{"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		got, changed := InjectIncludeUsage([]byte(tt.in))
		if string(got) != tt.want || !changed {
			t.Errorf("InjectIncludeUsage(%s) = %s, %v; want %s", tt.in, got, changed, tt.want)
		}
	}
	for _, in := range []string{`{"stream_options":{"include_usage":true}}`, `[]`, `{"a":`, ``} {
		if got, changed := InjectIncludeUsage([]byte(in)); changed || string(got) != in {
			t.Errorf("InjectIncludeUsage(%s) = %s, %v; want unchanged", in, got, changed)
		}
	}
}

// body1KB is a realistic ~1 KB chat completion.
var body1KB = []byte(strings.Replace(chatBody, "lush green marshland.", "lush green marshland. "+strings.Repeat("Tall grass sways. ", 22), 1))

func BenchmarkExtractJSON1KB(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body1KB)))
	for b.Loop() {
		u, ok := ExtractJSON(OpenAIChat, body1KB)
		if !ok || u.InputTokens != 1000 {
			b.Fatal("bad extract")
		}
	}
}

func BenchmarkInspectRequest(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"max_tokens":100,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + strings.Repeat("Tell me a story. ", 60) + `"}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := InspectRequest(OpenAIChat, body); err != nil {
			b.Fatal(err)
		}
	}
}
