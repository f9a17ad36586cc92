package spend

import "bytes"

// MaxEventSize bounds how much of one SSE event a StreamMeter buffers. A
// longer event is forwarded as it arrives without being parsed (its usage,
// if any, is missed and the stream is billed as estimated).
const MaxEventSize = 1 << 20

// StreamMeter meters a Server-Sent Events response while it is forwarded.
// The handler feeds it the upstream body chunk by chunk (split anywhere,
// even inside a CRLF) with Write and calls Finish at the end of the body;
// the meter hands back the bytes to forward one complete event at a time,
// so the handler can flush after each emit. It never holds more than one
// event (at most about MaxEventSize), never panics on garbage, and forwards
// every byte unchanged, except the usage-only chunk when strip is set.
//
// What it watches for:
//   - OpenAI chat/completions: the chunk whose "usage" is an object (sent
//     last when stream_options.include_usage is true). With strip, that
//     chunk is dropped from the output when its "choices" is empty (or
//     absent): the client did not ask for it.
//   - Responses API: response.completed (or .incomplete / .failed) whose
//     response.usage is an object.
//   - Anthropic: message_start (message.model, message.usage input and
//     cache counts) then message_delta (usage.output_tokens, cumulative;
//     input counts too when the API sends them).
//
// Meanwhile it counts streamed output (content, text, tool-call arguments,
// reasoning deltas) at about 4 bytes per token, so Result can bill a stream
// cut before its usage event.
//
// A StreamMeter is not safe for concurrent use; one per response.
type StreamMeter struct {
	f         Format
	strip     bool
	promptEst int64
	maxEvent  int

	buf         []byte // bytes of the current, incomplete event
	atLineStart bool   // the previous byte ended a line (or nothing yet in this event)
	afterCR     bool   // the previous byte was a CR: a LF now belongs to it
	pendingCR   bool   // a blank line ended with CR at a chunk end: a LF may follow
	passthrough bool   // the current event overflowed maxEvent: forward, don't parse
	err         error  // first emit error; emitting stops, metering goes on

	scratch []byte // joins multi-line data fields

	model    string
	usage    Usage
	sawUsage bool  // the final usage arrived
	sawStart bool  // Anthropic message_start arrived
	outEst   int64 // output tokens counted from deltas
}

// NewStreamMeter returns a meter for one streamed response. strip drops
// the OpenAI usage-only chunk (set it when the gateway injected
// include_usage, i.e. RequestInfo.IncludeUsage was false); promptEstimate
// (RequestInfo.PromptEstimate) is the input billed if the stream ends
// without usage.
func NewStreamMeter(f Format, strip bool, promptEstimate int64) *StreamMeter {
	return &StreamMeter{
		f:           f,
		strip:       strip && (f == OpenAIChat || f == OpenAICompletions),
		promptEst:   promptEstimate,
		maxEvent:    MaxEventSize,
		atLineStart: true,
	}
}

// Reset readies m for another response, keeping its buffers (meters can
// be pooled). Buffers that grew past 64 KiB for a huge event are dropped.
func (m *StreamMeter) Reset(f Format, strip bool, promptEstimate int64) {
	buf, scratch := m.buf[:0], m.scratch[:0]
	if cap(buf) > 64<<10 {
		buf = nil
	}
	if cap(scratch) > 64<<10 {
		scratch = nil
	}
	*m = *NewStreamMeter(f, strip, promptEstimate)
	m.buf, m.scratch = buf, scratch
}

// Write consumes the next upstream bytes and calls emit for each complete
// event, in order, with its raw bytes including the terminating blank line.
// The slice passed to emit is only valid during the call. The first error
// emit returns is returned (now and by every later call) and emit is not
// called again, but metering continues: keep writing the upstream body to
// bill what it produces after a client went away.
func (m *StreamMeter) Write(p []byte, emit func(event []byte) error) error {
	i := 0
	evStart := 0
	if m.pendingCR {
		m.pendingCR = false
		if len(p) > 0 && p[0] == '\n' {
			i = 1
		}
		m.endEvent(p[:i], emit)
		evStart = i
	}
	for i < len(p) {
		if m.afterCR {
			m.afterCR = false
			if p[i] == '\n' {
				i++
				continue
			}
		}
		j := lineEnd(p[i:])
		if j < 0 {
			m.atLineStart = false
			i = len(p)
			break
		}
		pos := i + j
		if pos > i {
			m.atLineStart = false
		}
		if !m.atLineStart {
			// End of a non-empty line.
			m.atLineStart = true
			m.afterCR = p[pos] == '\r'
			i = pos + 1
			continue
		}
		// A blank line: the event ends after its terminator.
		end := pos + 1
		if p[pos] == '\r' {
			if end == len(p) {
				m.pendingCR = true
				i = end
				break
			}
			if p[end] == '\n' {
				end++
			}
		}
		m.endEvent(p[evStart:end], emit)
		evStart, i = end, end
	}
	if evStart < len(p) {
		rest := p[evStart:]
		switch {
		case m.passthrough:
			m.emit(rest, emit)
		case len(m.buf)+len(rest) > m.maxEvent:
			// Too long to hold: forward what we have, unparsed, and the
			// rest of this event as it comes.
			if len(m.buf) > 0 {
				m.emit(m.buf, emit)
				m.buf = m.buf[:0]
			}
			m.emit(rest, emit)
			m.passthrough = true
		default:
			m.buf = append(m.buf, rest...)
		}
	}
	return m.err
}

// lineEnd returns the index of the first CR or LF in b, or -1.
func lineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	lim := b
	if n >= 0 {
		lim = b[:n]
	}
	if r := bytes.IndexByte(lim, '\r'); r >= 0 {
		return r
	}
	return n
}

// endEvent completes the current event with tail (its last bytes in the
// current chunk), then parses and forwards it.
func (m *StreamMeter) endEvent(tail []byte, emit func([]byte) error) {
	m.atLineStart = true
	m.afterCR = false
	if m.passthrough {
		m.passthrough = false
		m.emit(tail, emit)
		return
	}
	ev := tail
	if len(m.buf) > 0 {
		m.buf = append(m.buf, tail...)
		ev = m.buf
	}
	if !m.inspect(ev) {
		m.emit(ev, emit)
	}
	m.buf = m.buf[:0]
}

func (m *StreamMeter) emit(b []byte, emit func([]byte) error) {
	if m.err != nil || len(b) == 0 {
		return
	}
	if err := emit(b); err != nil {
		m.err = err
	}
}

// Finish forwards a last event left without its blank line (a body that
// ended mid-event) and returns the first emit error, if any.
func (m *StreamMeter) Finish(emit func(event []byte) error) error {
	if m.pendingCR {
		m.pendingCR = false
		m.endEvent(nil, emit)
	}
	if len(m.buf) > 0 {
		if !m.inspect(m.buf) {
			m.emit(m.buf, emit)
		}
		m.buf = m.buf[:0]
	}
	m.passthrough = false
	return m.err
}

// Result returns the usage of the stream so far. When the final usage
// event arrived it is exact; otherwise Estimated is true and the counts are
// reconstructed: for Anthropic after message_start, the exact input counts
// plus the larger of the reported and the counted output; else the prompt
// estimate plus the counted output.
func (m *StreamMeter) Result() Usage {
	u := m.usage
	if u.Model == "" {
		u.Model = m.model
	}
	switch {
	case m.sawUsage:
		u.Estimated = false
	case m.f == AnthropicMessages && m.sawStart:
		u.OutputTokens = max(u.OutputTokens, m.outEst)
		u.Estimated = true
	default:
		u = Usage{Model: m.model, InputTokens: m.promptEst, OutputTokens: m.outEst, Estimated: true}
	}
	return u
}

// UsageSeen reports whether the final usage event arrived.
func (m *StreamMeter) UsageSeen() bool { return m.sawUsage }

// inspect parses one complete event and reports whether it must be dropped.
func (m *StreamMeter) inspect(ev []byte) (drop bool) {
	data, ok := m.eventData(ev)
	if !ok {
		return false
	}
	s := scanner{b: data}
	if s.peek() != '{' {
		return false // "[DONE]", keep-alives, garbage
	}
	s.i++
	var (
		typ        []byte
		modelRaw   []byte
		u          Usage
		usageFound bool
		choices    = -1 // -1 absent, 0 empty array, 1 non-empty
		text       int
		nested     nestedInfo
	)
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			typ, _ = s.rawString()
		case "model":
			modelRaw, _ = s.rawString()
		case "usage":
			usageFound = s.usage(m.f, &u)
		case "choices":
			if s.peek() == '[' {
				save := s.i
				s.i++
				if s.peek() == ']' {
					choices = 0
				} else {
					choices = 1
				}
				s.i = save
			}
			text += s.textLen(0)
		case "delta":
			if s.peek() == '"' {
				raw, _ := s.str()
				text += len(raw)
			} else {
				text += s.textLen(0)
			}
		case "message", "response":
			nested = s.nested(m.f)
		default:
			s.skip()
		}
		if s.bad {
			break
		}
	}
	if text > 0 {
		m.outEst += max(1, int64((text+2)/4))
	}
	switch m.f {
	case OpenAIChat, OpenAICompletions, OpenAIEmbeddings:
		m.setModel(modelRaw)
		if usageFound {
			m.usage = u
			m.sawUsage = true
			return m.strip && choices <= 0
		}
	case OpenAIResponses:
		m.setModel(nested.model)
		switch string(typ) {
		case "response.completed", "response.incomplete", "response.failed":
			if nested.usageFound {
				m.usage = nested.usage
				m.sawUsage = true
			}
		}
	case AnthropicMessages:
		switch string(typ) {
		case "message_start":
			m.setModel(nested.model)
			if nested.usageFound {
				m.usage = nested.usage
				m.sawStart = true
			}
		case "message_delta":
			if usageFound {
				m.usage.OutputTokens = u.OutputTokens
				// Newer API versions repeat the (cumulative) input counts.
				if u.InputTokens > 0 {
					m.usage.InputTokens = u.InputTokens
				}
				if u.CachedInputTokens > 0 {
					m.usage.CachedInputTokens = u.CachedInputTokens
				}
				if u.CacheCreationTokens > 0 {
					m.usage.CacheCreationTokens = u.CacheCreationTokens
				}
				if u.CacheCreation1hTokens > 0 {
					m.usage.CacheCreation1hTokens = u.CacheCreation1hTokens
				}
				if !m.sawStart && m.usage.InputTokens == 0 {
					m.usage.InputTokens = m.promptEst
				}
				m.sawUsage = true
			}
		}
	}
	return false
}

type nestedInfo struct {
	model      []byte
	usage      Usage
	usageFound bool
}

// nested reads the model and usage of a "message" (Anthropic) or
// "response" (Responses API) object.
func (s *scanner) nested(f Format) nestedInfo {
	var n nestedInfo
	if !s.open() {
		return n
	}
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		switch string(k) {
		case "model":
			n.model, _ = s.rawString()
		case "usage":
			n.usageFound = s.usage(f, &n.usage)
		default:
			s.skip()
		}
		if s.bad {
			break
		}
	}
	return n
}

func (m *StreamMeter) setModel(raw []byte) {
	if len(raw) > 0 && string(raw) != m.model {
		m.model = string(raw)
	}
}

// eventData returns the data of an event (its data lines joined by LF, as
// the SSE spec does), aliasing ev when there is a single data line.
func (m *StreamMeter) eventData(ev []byte) ([]byte, bool) {
	var data []byte
	n := 0
	for len(ev) > 0 {
		j := lineEnd(ev)
		line := ev
		if j >= 0 {
			line = ev[:j]
			if ev[j] == '\r' && j+1 < len(ev) && ev[j+1] == '\n' {
				j++
			}
			ev = ev[j+1:]
		} else {
			ev = nil
		}
		if !bytes.HasPrefix(line, []byte("data")) {
			continue
		}
		v := line[4:]
		if len(v) > 0 {
			if v[0] != ':' {
				continue // "database: x" is another field
			}
			v = v[1:]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
		}
		switch n {
		case 0:
			data = v
		case 1:
			m.scratch = append(append(append(m.scratch[:0], data...), '\n'), v...)
			data = m.scratch
		default:
			m.scratch = append(append(m.scratch, '\n'), v...)
			data = m.scratch
		}
		n++
	}
	return data, n > 0
}

// maxTextDepth bounds recursion into nested content on hostile input.
const maxTextDepth = 8

// textLen consumes a value and returns the byte length of the generated
// text inside it: string members named like model output (content, text,
// arguments, partial_json, thinking, ...), at any depth up to maxTextDepth.
func (s *scanner) textLen(depth int) int {
	if depth > maxTextDepth {
		s.skip()
		return 0
	}
	n := 0
	switch s.peek() {
	case '{':
		s.i++
		first := true
		for {
			k, ok := s.key(&first)
			if !ok || s.bad {
				break
			}
			if isTextKey(k) && s.peek() == '"' {
				raw, _ := s.str()
				n += len(raw)
			} else {
				n += s.textLen(depth + 1)
			}
			if s.bad {
				break
			}
		}
	case '[':
		s.i++
		first := true
		for {
			c := s.peek()
			if c == ']' {
				s.i++
				break
			}
			if !first {
				if c != ',' {
					s.bad = true
					break
				}
				s.i++
			}
			first = false
			n += s.textLen(depth + 1)
			if s.bad {
				break
			}
		}
	default:
		s.skip()
	}
	return n
}

func isTextKey(k []byte) bool {
	switch string(k) {
	case "content", "text", "arguments", "refusal", "reasoning_content", "reasoning", "partial_json", "thinking", "delta":
		return true
	}
	return false
}
