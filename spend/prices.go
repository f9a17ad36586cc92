package spend

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"
	"sync"

	"github.com/llmspend/llmspend/money"
)

// Price is the cost of one token of each kind, in pico-USD. All prices we
// know are exact integers at this scale (0.075 USD per 1M tokens is 75000).
type Price struct {
	Input      money.Pico // input_cost_per_token
	Output     money.Pico // output_cost_per_token
	CacheRead  money.Pico // cache_read_input_token_cost (0: charged at Input)
	CacheWrite money.Pico // cache_creation_input_token_cost (0: charged at Input)
	// CacheWrite1h is cache_creation_input_token_cost_above_1hr, the
	// Anthropic 1-hour-TTL cache write (0: charged at CacheWrite).
	CacheWrite1h money.Pico
	// MaxOutputTokens is max_output_tokens (or max_tokens) from the table,
	// 0 when unknown; EstimateCost uses it when a request sets no limit.
	MaxOutputTokens int64
}

//go:embed prices.json
var defaultPricesJSON []byte

// PriceTable maps model names to prices. It is immutable once built, so it
// is safe for concurrent use without locks; With returns a new table.
type PriceTable struct {
	m map[string]Price
}

// NewPriceTable builds a table from a map (copied).
func NewPriceTable(m map[string]Price) *PriceTable {
	t := &PriceTable{m: make(map[string]Price, len(m))}
	for k, v := range m {
		t.m[k] = v
	}
	return t
}

var defaultTable = sync.OnceValue(func() *PriceTable {
	m, err := LoadPrices(bytes.NewReader(defaultPricesJSON))
	if err != nil {
		panic("spend: embedded prices.json: " + err.Error()) // caught by tests
	}
	return &PriceTable{m: m}
})

// DefaultPrices returns the embedded table (OpenAI and Anthropic models in
// LiteLLM's model_prices_and_context_window.json format). It is shared;
// extend it with With.
func DefaultPrices() *PriceTable { return defaultTable() }

// With returns a new table holding t's entries plus overrides (an override
// replaces the entry of the same name). t is not modified.
func (t *PriceTable) With(overrides map[string]Price) *PriceTable {
	n := &PriceTable{m: make(map[string]Price, len(t.m)+len(overrides))}
	for k, v := range t.m {
		n.m[k] = v
	}
	for k, v := range overrides {
		n.m[k] = v
	}
	return n
}

// Len returns the number of entries.
func (t *PriceTable) Len() int { return len(t.m) }

// Lookup finds the price of a model, trying in order:
//  1. the exact name ("gpt-4o-mini-2024-07-18", "azure/gpt-4o");
//  2. the name without a provider prefix (everything up to the last "/":
//     "openai/gpt-4o" -> "gpt-4o");
//  3. that name without a date or "-latest" suffix ("-2024-07-18",
//     "-20250514", "-latest": "gpt-4.1-2025-04-14" -> "gpt-4.1").
//
// An exact dated entry always wins over the undated family price, so a
// snapshot priced differently (gpt-4o-2024-05-13) keeps its own price. No
// allocation on any path.
func (t *PriceTable) Lookup(model string) (Price, bool) {
	if p, ok := t.m[model]; ok {
		return p, true
	}
	name := model
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
		if p, ok := t.m[name]; ok {
			return p, true
		}
	}
	if base, ok := stripDateSuffix(name); ok {
		if p, ok := t.m[base]; ok {
			return p, true
		}
	}
	return Price{}, false
}

// stripDateSuffix removes "-YYYY-MM-DD", "-YYYYMMDD" or "-latest".
func stripDateSuffix(s string) (string, bool) {
	if b, ok := strings.CutSuffix(s, "-latest"); ok {
		return b, b != ""
	}
	digits := func(x string) bool {
		for i := 0; i < len(x); i++ {
			if x[i] < '0' || x[i] > '9' {
				return false
			}
		}
		return true
	}
	if n := len(s); n > 11 && s[n-11] == '-' && s[n-6] == '-' && s[n-3] == '-' &&
		digits(s[n-10:n-6]) && digits(s[n-5:n-3]) && digits(s[n-2:]) {
		return s[:n-11], true
	}
	if n := len(s); n > 9 && s[n-9] == '-' && digits(s[n-8:]) && (s[n-8] == '2') {
		return s[:n-9], true
	}
	return s, false
}

// priceEntry is one model of a LiteLLM price file; other fields are ignored.
type priceEntry struct {
	Input           *json.Number    `json:"input_cost_per_token"`
	Output          *json.Number    `json:"output_cost_per_token"`
	CacheRead       *json.Number    `json:"cache_read_input_token_cost"`
	CacheWrite      *json.Number    `json:"cache_creation_input_token_cost"`
	CacheWrite1h    *json.Number    `json:"cache_creation_input_token_cost_above_1hr"`
	MaxTokens       json.RawMessage `json:"max_tokens"`
	MaxOutputTokens json.RawMessage `json:"max_output_tokens"`
}

// LoadPrices reads a file in LiteLLM's model_prices_and_context_window.json
// format. Prices are converted from their JSON number text exactly
// ("7.5e-08" is 75000 pico-USD, with no float rounding); a price finer than
// one pico-USD is rounded to the nearest. Entries without any per-token
// price (image or audio models priced otherwise) and the "sample_spec"
// entry are skipped; a per-token price that is not a non-negative number is
// an error naming the model.
func LoadPrices(r io.Reader) (map[string]Price, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("price file: %w", err)
	}
	out := make(map[string]Price, len(raw))
	for model, msg := range raw {
		if model == "sample_spec" {
			continue
		}
		var e priceEntry
		d := json.NewDecoder(bytes.NewReader(msg))
		d.UseNumber()
		if err := d.Decode(&e); err != nil {
			return nil, fmt.Errorf("price file: model %q: %w", model, err)
		}
		if e.Input == nil && e.Output == nil && e.CacheRead == nil && e.CacheWrite == nil {
			continue
		}
		var p Price
		for _, f := range []struct {
			name string
			n    *json.Number
			dst  *money.Pico
		}{
			{"input_cost_per_token", e.Input, &p.Input},
			{"output_cost_per_token", e.Output, &p.Output},
			{"cache_read_input_token_cost", e.CacheRead, &p.CacheRead},
			{"cache_creation_input_token_cost", e.CacheWrite, &p.CacheWrite},
			{"cache_creation_input_token_cost_above_1hr", e.CacheWrite1h, &p.CacheWrite1h},
		} {
			if f.n == nil {
				continue
			}
			v, err := ParsePrice(f.n.String())
			if err != nil {
				return nil, fmt.Errorf("price file: model %q: %s: %w", model, f.name, err)
			}
			*f.dst = v
		}
		p.MaxOutputTokens = rawCount(e.MaxOutputTokens)
		if p.MaxOutputTokens == 0 {
			p.MaxOutputTokens = rawCount(e.MaxTokens)
		}
		out[model] = p
	}
	return out, nil
}

// rawCount reads an integer token limit; LiteLLM's sample_spec puts prose
// in these fields, so anything else is 0.
func rawCount(m json.RawMessage) int64 {
	return parseCount(bytes.TrimSpace(m))
}

// ParsePrice converts a USD amount written as a JSON number ("0.15",
// "1.5e-07", "2E-6") to pico-USD exactly: the exponent is applied to the
// decimal text before money.ParseUSD, so no binary float is involved.
// Negative amounts are an error.
func ParsePrice(s string) (money.Pico, error) {
	d, err := expandExponent(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	v, err := money.ParseUSD(d)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative price %q", s)
	}
	return v, nil
}

// PerMillion converts a price in USD per 1M tokens ("0.075", the form
// people write in a Caddyfile) to pico-USD per token: 0.075 -> 75000.
func PerMillion(usdPerMillion string) (money.Pico, error) {
	d, err := expandExponent(strings.TrimSpace(usdPerMillion))
	if err != nil {
		return 0, err
	}
	// Dividing by 1e6 is a shift of the decimal point by 6.
	return ParsePrice(d + "e-6")
}

// expandExponent rewrites a JSON-style number as plain decimal text:
// "1.5e-07" -> "0.00000015", "2E3" -> "2000". Text without an exponent is
// returned as is (after a syntax check).
func expandExponent(s string) (string, error) {
	bad := fmt.Errorf("invalid number %q", s)
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		es := s[i+1:]
		neg := false
		if es != "" && (es[0] == '+' || es[0] == '-') {
			neg = es[0] == '-'
			es = es[1:]
		}
		if es == "" || len(es) > 4 {
			return "", bad
		}
		for i := 0; i < len(es); i++ {
			if es[i] < '0' || es[i] > '9' {
				return "", bad
			}
			exp = exp*10 + int(es[i]-'0')
		}
		if neg {
			exp = -exp
		}
	}
	sign := ""
	if mant != "" && (mant[0] == '-' || mant[0] == '+') {
		if mant[0] == '-' {
			sign = "-"
		}
		mant = mant[1:]
	}
	intPart, frac, hasDot := strings.Cut(mant, ".")
	if intPart == "" && frac == "" || hasDot && frac == "" && intPart == "" {
		return "", bad
	}
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return "", bad
			}
		}
	}
	if exp == 0 {
		if intPart == "" {
			intPart = "0"
		}
		if frac == "" {
			return sign + intPart, nil
		}
		return sign + intPart + "." + frac, nil
	}
	digits := intPart + frac
	point := len(intPart) + exp // position of the decimal point in digits
	switch {
	case point <= 0:
		return sign + "0." + strings.Repeat("0", -point) + digits, nil
	case point >= len(digits):
		return sign + digits + strings.Repeat("0", point-len(digits)), nil
	default:
		return sign + digits[:point] + "." + digits[point:], nil
	}
}

// DefaultOutputEstimate is the output size EstimateCost assumes for a
// request that sets no max_tokens, capped by the model's own limit.
const DefaultOutputEstimate = 4096

// EstimateCost is an upper estimate of a request's cost before it is sent,
// for Ledger.Reserve: the prompt estimate at the dearest input rate plus
// max_tokens (or min(model limit, DefaultOutputEstimate) when unset) at
// the output rate. Embeddings have no output.
func EstimateCost(f Format, p Price, info RequestInfo) money.Pico {
	in := max(p.Input, p.CacheWrite, p.CacheWrite1h)
	c := mulSat(info.PromptEstimate, in)
	if f == OpenAIEmbeddings {
		return c
	}
	out := info.MaxTokens
	if out <= 0 {
		out = DefaultOutputEstimate
		if p.MaxOutputTokens > 0 && p.MaxOutputTokens < out {
			out = p.MaxOutputTokens
		}
	}
	return addSat(c, mulSat(out, p.Output))
}

// Cost prices a request exactly, in integer pico-USD (saturating at the
// int64 maximum instead of overflowing). Cached tokens are charged once, at
// the cache rate.
//
// OpenAI formats (reasoning tokens are already inside OutputTokens and are
// not added again; CacheRead 0 means the input rate):
//
//	(InputTokens-CachedInputTokens)*Input + CachedInputTokens*CacheRead + OutputTokens*Output
//
// AnthropicMessages (CacheRead and CacheWrite 0 mean the input rate,
// CacheWrite1h 0 means CacheWrite):
//
//	InputTokens*Input + CachedInputTokens*CacheRead
//	+ (CacheCreationTokens-CacheCreation1hTokens)*CacheWrite + CacheCreation1hTokens*CacheWrite1h
//	+ OutputTokens*Output
//
// Negative counts are treated as 0.
func Cost(f Format, p Price, u Usage) money.Pico {
	in, cached, created, out := max(u.InputTokens, 0), max(u.CachedInputTokens, 0), max(u.CacheCreationTokens, 0), max(u.OutputTokens, 0)
	read, write, write1h := p.CacheRead, p.CacheWrite, p.CacheWrite1h
	if read == 0 {
		read = p.Input
	}
	if write == 0 {
		write = p.Input
	}
	if write1h == 0 {
		write1h = write
	}
	var c money.Pico
	if f == AnthropicMessages {
		long := min(max(u.CacheCreation1hTokens, 0), created)
		c = mulSat(in, p.Input)
		c = addSat(c, mulSat(cached, read))
		c = addSat(c, mulSat(created-long, write))
		c = addSat(c, mulSat(long, write1h))
	} else {
		cached = min(cached, in)
		c = mulSat(in-cached, p.Input)
		c = addSat(c, mulSat(cached, read))
	}
	return addSat(c, mulSat(out, p.Output))
}

func mulSat(n int64, p money.Pico) money.Pico {
	if n <= 0 || p <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(n), uint64(p))
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return money.Pico(lo)
}

func addSat(a, b money.Pico) money.Pico {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxInt64
}
