package spend

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func chunk(content string) string {
	return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":` + content + `},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
}

const openAIUsageEvent = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}` + "\n\n"

var openAIStreamBody = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
	chunk(`"Hello"`) + chunk(`" there"`) + chunk(`", how can I help you today?"`) +
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n"

var openAIStream = openAIStreamBody + openAIUsageEvent + "data: [DONE]\n\n"

const anthropicStream = `event: message_start
data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":60,"ephemeral_1h_input_tokens":40},"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, I am Claude and I can help with that question"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

`

const responsesStream = `event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi there, friend"}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi there, friend"}

event: response.completed
data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","content":[{"type":"output_text","text":"Hi there, friend"}]}],"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":16},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":48}}}

`

// run feeds in to a meter split at the given points and returns what was
// forwarded (and each emitted event).
func run(t testing.TB, m *StreamMeter, in []byte, splits []int) (out []byte, events []string) {
	emit := func(ev []byte) error {
		out = append(out, ev...)
		events = append(events, string(ev))
		return nil
	}
	prev := 0
	for _, s := range splits {
		if err := m.Write(in[prev:s], emit); err != nil {
			t.Fatal(err)
		}
		prev = s
	}
	if err := m.Write(in[prev:], emit); err != nil {
		t.Fatal(err)
	}
	if err := m.Finish(emit); err != nil {
		t.Fatal(err)
	}
	return out, events
}

func randomSplits(r *rand.Rand, n int) []int {
	var s []int
	for i := 0; i < n; i++ {
		if r.IntN(7) == 0 {
			s = append(s, i)
		}
	}
	return s
}

func allSplits(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestStreamMeterFormats(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		in   string
		want Usage
	}{
		{"openai", OpenAIChat, openAIStream, Usage{Model: "gpt-4o-mini-2024-07-18", InputTokens: 1000, CachedInputTokens: 200, OutputTokens: 500}},
		{"anthropic", AnthropicMessages, anthropicStream, Usage{Model: "claude-sonnet-4-20250514", InputTokens: 25, CacheCreationTokens: 100, CacheCreation1hTokens: 40, CachedInputTokens: 2000, OutputTokens: 15}},
		{"responses", OpenAIResponses, responsesStream, Usage{Model: "gpt-4.1-2025-04-14", InputTokens: 37, CachedInputTokens: 16, OutputTokens: 11, ReasoningTokens: 4}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		for _, eol := range []string{"\n", "\r\n", "\r"} {
			in := []byte(strings.ReplaceAll(tt.in, "\n", eol))
			splitSets := [][]int{nil, allSplits(len(in))}
			for k := 0; k < 30; k++ {
				splitSets = append(splitSets, randomSplits(r, len(in)))
			}
			for _, splits := range splitSets {
				m := NewStreamMeter(tt.f, false, 999)
				out, events := run(t, m, in, splits)
				if !bytes.Equal(out, in) {
					t.Fatalf("%s eol %q: forwarded bytes differ:\n%q\n%q", tt.name, eol, out, in)
				}
				if got := m.Result(); got != tt.want {
					t.Fatalf("%s eol %q splits %v: Result = %+v, want %+v", tt.name, eol, splits, got, tt.want)
				}
				// One emit per event: each ends with a blank line and
				// holds exactly one.
				want := strings.Count(tt.in, "\n\n")
				if len(events) != want {
					t.Fatalf("%s eol %q: %d emits, want %d", tt.name, eol, len(events), want)
				}
				for _, ev := range events {
					if !strings.HasSuffix(ev, eol+eol) {
						t.Fatalf("%s: event %q does not end with a blank line", tt.name, ev)
					}
				}
			}
		}
	}
}

func TestStreamMeterStrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for k := 0; k < 50; k++ {
		in := []byte(openAIStream)
		m := NewStreamMeter(OpenAIChat, true, 0)
		out, _ := run(t, m, in, randomSplits(r, len(in)))
		if want := openAIStreamBody + "data: [DONE]\n\n"; string(out) != want {
			t.Fatalf("stripped output:\n%q\nwant\n%q", out, want)
		}
		if u := m.Result(); u.Estimated || u.InputTokens != 1000 || u.OutputTokens != 500 {
			t.Fatalf("Result = %+v", u)
		}
	}
	// A usage chunk that still carries choices is never dropped.
	in := strings.Replace(openAIUsageEvent, `"choices":[]`, `"choices":[{"index":0,"delta":{"content":"x"}}]`, 1)
	m := NewStreamMeter(OpenAIChat, true, 0)
	if out, _ := run(t, m, []byte(in), nil); string(out) != in || !m.UsageSeen() {
		t.Fatalf("usage chunk with choices dropped: %q", out)
	}
	// Strip is ignored for Anthropic.
	m = NewStreamMeter(AnthropicMessages, true, 0)
	if out, _ := run(t, m, []byte(anthropicStream), nil); string(out) != anthropicStream {
		t.Fatal("anthropic stream altered by strip")
	}
}

func TestStreamMeterTruncated(t *testing.T) {
	// OpenAI stream cut before the usage chunk, mid-event.
	in := openAIStreamBody[:len(openAIStreamBody)-40]
	m := NewStreamMeter(OpenAIChat, true, 321)
	out, _ := run(t, m, []byte(in), nil)
	if string(out) != in {
		t.Fatalf("partial event not forwarded at Finish")
	}
	u := m.Result()
	// About 4 bytes a token, rounded: "Hello" (5 bytes) -> 1, " there" (6) -> 2, the sentence (27) -> 7.
	if !u.Estimated || u.InputTokens != 321 || u.OutputTokens != 1+2+7 || u.Model != "gpt-4o-mini-2024-07-18" {
		t.Fatalf("Result = %+v", u)
	}
	// Anthropic cut after message_start and some deltas: exact input.
	cut := strings.Index(anthropicStream, "event: content_block_stop")
	m = NewStreamMeter(AnthropicMessages, false, 5)
	run(t, m, []byte(anthropicStream[:cut]), nil)
	u = m.Result()
	if !u.Estimated || u.InputTokens != 25 || u.CachedInputTokens != 2000 || u.CacheCreationTokens != 100 || u.OutputTokens != 13+1 || u.Model != "claude-sonnet-4-20250514" {
		t.Fatalf("anthropic Result = %+v", u)
	}
	// Nothing at all.
	m = NewStreamMeter(OpenAIResponses, false, 7)
	run(t, m, nil, nil)
	if u := m.Result(); u != (Usage{InputTokens: 7, Estimated: true}) {
		t.Fatalf("empty Result = %+v", u)
	}
}

func TestStreamMeterGarbageAndOversize(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for k := 0; k < 200; k++ {
		in := make([]byte, r.IntN(3000))
		for i := range in {
			const alphabet = "data: {}[]\"\\\r\n:usage choices,x"
			in[i] = alphabet[r.IntN(len(alphabet))]
		}
		for f := OpenAIChat; f <= AnthropicMessages; f++ {
			m := NewStreamMeter(f, false, 1)
			m.maxEvent = 64
			if out, _ := run(t, m, in, randomSplits(r, len(in))); !bytes.Equal(out, in) {
				t.Fatalf("garbage not passed through")
			}
		}
	}
	// An oversize event passes through unparsed; the next one is metered.
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("a", 5000) + "\"}}]}\n\n"
	in := []byte(big + openAIUsageEvent)
	m := NewStreamMeter(OpenAIChat, true, 0)
	m.maxEvent = 1000
	out, _ := run(t, m, in, []int{100, 2000, 4000, 5100})
	if string(out) != big || !m.UsageSeen() {
		t.Fatalf("oversize: forwarded %d bytes, usage seen %v", len(out), m.UsageSeen())
	}
	if len(m.buf) != 0 || cap(m.buf) > 2*1000+200 {
		t.Fatalf("buffer grew to %d", cap(m.buf))
	}
}

func TestStreamMeterMultilineData(t *testing.T) {
	in := "event: message_delta\ndata: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":42}}\n\n"
	m := NewStreamMeter(AnthropicMessages, false, 9)
	run(t, m, []byte(in), nil)
	if u := m.Result(); u.OutputTokens != 42 || u.InputTokens != 9 || u.Estimated {
		t.Fatalf("Result = %+v", u)
	}
}

func TestStreamMeterEmitError(t *testing.T) {
	boom := errors.New("client gone")
	m := NewStreamMeter(OpenAIChat, true, 0)
	calls := 0
	emit := func([]byte) error { calls++; return boom }
	if err := m.Write([]byte(openAIStreamBody), emit); err != boom {
		t.Fatalf("Write err = %v", err)
	}
	if err := m.Write([]byte(openAIUsageEvent), emit); err != boom {
		t.Fatalf("second Write err = %v", err)
	}
	if err := m.Finish(emit); err != boom || calls != 1 {
		t.Fatalf("Finish err = %v, emit calls %d", err, calls)
	}
	if u := m.Result(); u.Estimated || u.OutputTokens != 500 {
		t.Fatalf("metering stopped after emit error: %+v", u)
	}
}

func FuzzStreamMeter(f *testing.F) {
	f.Add(uint8(1), false, []byte(openAIStream), uint16(7))
	f.Add(uint8(5), false, []byte(anthropicStream), uint16(3))
	f.Add(uint8(4), true, []byte(responsesStream), uint16(1))
	f.Add(uint8(1), true, []byte(strings.ReplaceAll(openAIStream, "\n", "\r\n")), uint16(13))
	f.Fuzz(func(t *testing.T, fm uint8, strip bool, in []byte, step uint16) {
		m := NewStreamMeter(Format(fm%5+1), strip, 10)
		m.maxEvent = 256
		var out []byte
		emit := func(ev []byte) error {
			if len(ev) == 0 {
				t.Fatal("empty emit")
			}
			out = append(out, ev...)
			return nil
		}
		st := int(step%64) + 1
		for i := 0; i < len(in); i += st {
			m.Write(in[i:min(i+st, len(in))], emit)
		}
		m.Finish(emit)
		u := m.Result()
		if u.InputTokens < 0 || u.OutputTokens < 0 {
			t.Fatalf("negative usage %+v", u)
		}
		if !strip && !bytes.Equal(out, in) {
			t.Fatalf("forwarded %q, input %q", out, in)
		}
		if strip && len(out) > len(in) {
			t.Fatal("output longer than input")
		}
		// Chunking never changes the result: split vs whole input.
		feed := func(step int) ([]byte, Usage) {
			m := NewStreamMeter(Format(fm%5+1), strip, 10)
			var out []byte
			emit := func(ev []byte) error { out = append(out, ev...); return nil }
			for i := 0; i < len(in); i += step {
				m.Write(in[i:min(i+step, len(in))], emit)
			}
			m.Finish(emit)
			return out, m.Result()
		}
		o1, u1 := feed(st)
		o2, u2 := feed(len(in) + 1)
		if !bytes.Equal(o1, o2) || u1 != u2 {
			t.Fatalf("split %d vs whole differ:\n%q %+v\n%q %+v", st, o1, u1, o2, u2)
		}
	})
}

func BenchmarkStreamMeter100Events(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(chunk(`""`))
	for i := 0; i < 98; i++ {
		sb.WriteString(chunk(`" token"`))
	}
	sb.WriteString(openAIUsageEvent)
	in := []byte(sb.String())
	// Feed it in 1500-byte pieces, like network reads.
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	emit := func([]byte) error { return nil }
	m := NewStreamMeter(OpenAIChat, true, 0)
	for b.Loop() {
		m.Reset(OpenAIChat, true, 0)
		for i := 0; i < len(in); i += 1500 {
			m.Write(in[i:min(i+1500, len(in))], emit)
		}
		m.Finish(emit)
		if m.Result().OutputTokens != 500 {
			b.Fatal("no usage")
		}
	}
}
