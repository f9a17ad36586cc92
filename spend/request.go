package spend

import (
	"encoding/json"
	"errors"
)

// RequestInfo is what the gateway needs to know about a request body before
// forwarding it.
type RequestInfo struct {
	Model string
	// Stream is true when "stream" is the literal true.
	Stream bool
	// IncludeUsage is true when stream_options.include_usage is the literal
	// true: the client asked for the usage chunk, so it must not be stripped.
	IncludeUsage bool
	// MaxTokens is the largest of max_tokens, max_completion_tokens and
	// max_output_tokens (0 when none is set). Taking the largest keeps the
	// budget reservation an upper bound whichever one the upstream honours.
	MaxTokens int64
	// PromptEstimate approximates the prompt in tokens: the byte size of the
	// prompt-bearing members (messages, prompt, input, system, instructions,
	// tools, functions) divided by 4, rounded up. It is the input count billed
	// for a stream cut before its usage event, and feeds EstimateCost.
	PromptEstimate int64
}

// ErrMalformedRequest is returned by InspectRequest for a body that is not a
// JSON object; the handler answers 400 invalid_request_error.
var ErrMalformedRequest = errors.New("request body is not a valid JSON object")

// InspectRequest validates a request body and reads the fields the gateway
// needs. Any body that is not one valid JSON object is an error.
func InspectRequest(f Format, body []byte) (RequestInfo, error) {
	var info RequestInfo
	if !json.Valid(body) {
		return info, ErrMalformedRequest
	}
	s := scanner{b: body}
	if !s.open() {
		return info, ErrMalformedRequest
	}
	var promptBytes int64
	var maxTok, maxCompl, maxOut int64
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		switch string(k) {
		case "model":
			// The model string is kept: the handler uses it for access
			// checks and price lookup.
			info.Model = s.string()
		case "stream":
			info.Stream = s.boolTrue()
		case "stream_options":
			info.IncludeUsage = false
			if s.open() {
				f2 := true
				for {
					k2, ok := s.key(&f2)
					if !ok {
						break
					}
					if string(k2) == "include_usage" {
						info.IncludeUsage = s.boolTrue()
					} else {
						s.skip()
					}
				}
			}
		case "max_tokens":
			maxTok = s.int()
		case "max_completion_tokens":
			maxCompl = s.int()
		case "max_output_tokens":
			maxOut = s.int()
		case "messages", "prompt", "input", "system", "instructions", "tools", "functions":
			start := s.i
			s.skip()
			promptBytes += int64(s.i - start)
		default:
			s.skip()
		}
		if s.bad {
			return RequestInfo{}, ErrMalformedRequest
		}
	}
	if s.bad {
		return RequestInfo{}, ErrMalformedRequest
	}
	info.MaxTokens = max(maxTok, maxCompl, maxOut)
	info.PromptEstimate = (promptBytes + 3) / 4
	_ = f // all formats share these member names today
	return info, nil
}

// InjectIncludeUsage makes an OpenAI chat/completions request body ask for
// the final usage chunk: it sets stream_options.include_usage to true,
// adding stream_options when absent, and leaves every other byte of the body
// as it was. It returns the body unchanged and false when include_usage is
// already true or the body is not a JSON object. Call it only for streaming
// chat/completions requests whose RequestInfo.IncludeUsage is false, and
// strip the usage chunk from the response (NewStreamMeter's strip).
func InjectIncludeUsage(body []byte) ([]byte, bool) {
	s := scanner{b: body}
	if s.peek() != '{' {
		return body, false
	}
	open := s.i
	s.i++
	// Position of the last "stream_options" value (last duplicate wins
	// upstream as it does for encoding/json).
	soStart, soEnd := -1, -1
	empty := true
	first := true
	for {
		k, ok := s.key(&first)
		if !ok {
			break
		}
		empty = false
		if string(k) == "stream_options" {
			s.ws()
			soStart = s.i
			s.skip()
			soEnd = s.i
		} else {
			s.skip()
		}
		if s.bad {
			return body, false
		}
	}
	if s.bad {
		return body, false
	}
	const member = `"stream_options":{"include_usage":true}`
	if soStart < 0 {
		out := make([]byte, 0, len(body)+len(member)+1)
		out = append(out, body[:open+1]...)
		out = append(out, member...)
		if !empty {
			out = append(out, ',')
		}
		return append(out, body[open+1:]...), true
	}
	if body[soStart] != '{' {
		// null, false, a string...: replace the whole value.
		return splice(body, soStart, soEnd, `{"include_usage":true}`), true
	}
	// An object: find the last include_usage in it.
	o := scanner{b: body, i: soStart + 1}
	iuStart, iuEnd := -1, -1
	oEmpty := true
	first = true
	for {
		k, ok := o.key(&first)
		if !ok {
			break
		}
		oEmpty = false
		if string(k) == "include_usage" {
			o.ws()
			iuStart = o.i
			o.skip()
			iuEnd = o.i
		} else {
			o.skip()
		}
		if o.bad {
			return body, false
		}
	}
	if iuStart >= 0 {
		if string(body[iuStart:iuEnd]) == "true" {
			return body, false
		}
		return splice(body, iuStart, iuEnd, "true"), true
	}
	ins := `"include_usage":true`
	if !oEmpty {
		ins += ","
	}
	return splice(body, soStart+1, soStart+1, ins), true
}

// splice returns a new slice with b[i:j] replaced by s.
func splice(b []byte, i, j int, s string) []byte {
	out := make([]byte, 0, len(b)-(j-i)+len(s))
	out = append(out, b[:i]...)
	out = append(out, s...)
	return append(out, b[j:]...)
}
