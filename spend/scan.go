package spend

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// scanner is a minimal, allocation-free JSON walker. It reads only the
// members it is asked about and skips everything else, which is what makes
// usage extraction cheap: a 1 KB completion is mostly "choices" text that we
// jump over with vectorised IndexByte calls instead of decoding.
//
// It is not a validator. On structurally broken input it sets bad and stops
// making progress; callers treat bad as "nothing found". Semantics on valid
// JSON match encoding/json decoding into map[string]any: keys are matched
// exactly (after unescaping), and the last duplicate key wins.
type scanner struct {
	b   []byte
	i   int
	bad bool
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	s.bad = true
	return 0
}

// str consumes a string token starting at s.i (which must be '"') and
// returns its raw contents (escapes not decoded) and whether it has any.
func (s *scanner) str() (raw []byte, esc bool) {
	start := s.i + 1
	b := s.b
	j := start
	// Most strings are short (keys, ids, one-token deltas): a plain loop
	// beats IndexByte's call overhead there.
	for lim := min(len(b), start+32); j < lim; j++ {
		switch b[j] {
		case '"':
			s.i = j + 1
			return b[start:j], false
		case '\\':
			goto long
		}
	}
long:
	for {
		k := bytes.IndexByte(s.b[j:], '"')
		if k < 0 {
			s.bad = true
			s.i = len(s.b)
			return nil, false
		}
		q := j + k
		// A quote preceded by an odd number of backslashes is escaped.
		n := 0
		for p := q - 1; p >= start && s.b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			s.i = q + 1
			raw = s.b[start:q]
			return raw, bytes.IndexByte(raw, '\\') >= 0
		}
		j = q + 1
	}
}

// skip consumes one value of any type.
func (s *scanner) skip() {
	switch c := s.peek(); c {
	case '"':
		s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
		s.bad = true
	default:
		start := s.i
		for s.i < len(s.b) && isTokenByte(s.b[s.i]) {
			s.i++
		}
		if s.i == start {
			s.bad = true
		}
	}
}

func isTokenByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
}

// open consumes '{' and reports whether the next value is an object. When it
// is not, the value is skipped.
func (s *scanner) open() bool {
	if s.peek() != '{' {
		if !s.bad {
			s.skip()
		}
		return false
	}
	s.i++
	return true
}

// key returns the next member name of the object being iterated, with the
// position on its value. first must start true for each object. It returns
// false at the closing brace or on a syntax error.
func (s *scanner) key(first *bool) ([]byte, bool) {
	c := s.peek()
	if c == '}' {
		s.i++
		return nil, false
	}
	if !*first {
		if c != ',' {
			s.bad = true
			return nil, false
		}
		s.i++
		c = s.peek()
	}
	*first = false
	if c != '"' {
		s.bad = true
		return nil, false
	}
	begin := s.i
	raw, esc := s.str()
	if s.bad {
		return nil, false
	}
	if esc {
		raw = []byte(unquote(s.b[begin:s.i]))
	}
	if s.peek() != ':' {
		s.bad = true
		return nil, false
	}
	s.i++
	return raw, true
}

// int consumes a value and returns it as a token count: a non-negative
// integer literal that fits in int64. Anything else (fractions, exponents,
// negatives, strings, null) counts as 0: token counts are integers.
func (s *scanner) int() int64 {
	c := s.peek()
	if c != '-' && (c < '0' || c > '9') {
		s.skip()
		return 0
	}
	start := s.i
	for s.i < len(s.b) && isTokenByte(s.b[s.i]) {
		s.i++
	}
	return parseCount(s.b[start:s.i])
}

func parseCount(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	if b[0] == '-' { // "-0" is 0; any other negative is invalid
		for _, c := range b[1:] {
			if c != '0' {
				return 0
			}
		}
		return 0
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return 0
		}
		v = v*10 + d
	}
	return v
}

// string consumes a value and returns it when it is a string ("" otherwise).
func (s *scanner) string() string {
	raw, ok := s.rawString()
	if !ok {
		return ""
	}
	return string(raw)
}

// rawString consumes a value and returns its decoded bytes when it is a
// string. Without escapes the bytes alias the input (no allocation).
func (s *scanner) rawString() ([]byte, bool) {
	if s.peek() != '"' {
		s.skip()
		return nil, false
	}
	begin := s.i
	raw, esc := s.str()
	if s.bad {
		return nil, false
	}
	if esc || !utf8.Valid(raw) {
		// Rare: let encoding/json decode escapes and replace invalid UTF-8
		// exactly as it would.
		return []byte(unquote(s.b[begin:s.i])), true
	}
	return raw, true
}

// boolTrue consumes a value and reports whether it is the literal true.
func (s *scanner) boolTrue() bool {
	if s.peek() == 't' && bytes.HasPrefix(s.b[s.i:], []byte("true")) {
		s.i += 4
		if s.i < len(s.b) && isTokenByte(s.b[s.i]) {
			s.skip() // "truex": garbage
			return false
		}
		return true
	}
	s.skip()
	return false
}

func unquote(quoted []byte) string {
	var v string
	if err := json.Unmarshal(quoted, &v); err != nil {
		return ""
	}
	return v
}
