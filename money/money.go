// Package money holds exact USD amounts as integer pico-dollars.
//
// Published LLM prices go down to fractions of a nano-dollar per token
// (0.075 USD per 1M tokens is 75 nano-USD, and some are smaller), so
// micro-USD would round most of a small request away. An int64 of
// pico-USD holds about 9.2 million USD, far more than any key's budget,
// and every price per token is an exact integer at this scale.
package money

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Pico is an amount of money in pico-USD (1e-12 USD).
type Pico int64

// USD is one dollar in pico-USD.
const USD Pico = 1_000_000_000_000

// FromUSD converts a float amount of dollars to Pico, rounding to the
// nearest pico-dollar. Use it only at the edges (JSON input); sums are
// always done on Pico.
func FromUSD(f float64) Pico {
	return Pico(math.Round(f * float64(USD)))
}

// ParseUSD parses a decimal dollar amount ("0.15", "1e-7", "2") exactly
// when it has at most 12 fractional digits, and by rounding otherwise.
func ParseUSD(s string) (Pico, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty amount")
	}
	// Plain decimals are parsed digit by digit so "0.000000075" is exact.
	if !strings.ContainsAny(s, "eE") {
		neg := false
		if s[0] == '-' || s[0] == '+' {
			neg = s[0] == '-'
			s = s[1:]
		}
		intPart, frac, _ := strings.Cut(s, ".")
		if intPart == "" && frac == "" {
			return 0, fmt.Errorf("invalid amount %q", s)
		}
		if intPart == "" {
			intPart = "0"
		}
		ip, err := strconv.ParseInt(intPart, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid amount %q", s)
		}
		if ip > int64(math.MaxInt64/USD) {
			return 0, fmt.Errorf("amount %q too large", s)
		}
		var fp int64
		var roundUp bool
		for i := 0; i < len(frac); i++ {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("invalid amount %q", s)
			}
			if i < 12 {
				fp = fp*10 + int64(c-'0')
			} else if i == 12 && c >= '5' {
				roundUp = true
			}
		}
		for i := len(frac); i < 12; i++ {
			fp *= 10
		}
		if roundUp {
			fp++
		}
		v := Pico(ip)*USD + Pico(fp)
		if neg {
			v = -v
		}
		return v, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid amount %q", s)
	}
	if math.Abs(f) > float64(math.MaxInt64/USD) {
		return 0, fmt.Errorf("amount %q too large", s)
	}
	return FromUSD(f), nil
}

// USD returns the amount in dollars as a float, for JSON output and display.
func (p Pico) USD() float64 { return float64(p) / float64(USD) }

// String formats the amount in dollars with up to 12 decimals and no
// trailing zeros: "0.000123", "2", "-1.5".
func (p Pico) String() string {
	neg := p < 0
	u := uint64(p)
	if neg {
		u = uint64(-p)
	}
	whole := u / uint64(USD)
	frac := u % uint64(USD)
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(strconv.FormatUint(whole, 10))
	if frac != 0 {
		fs := strconv.FormatUint(frac, 10)
		fs = strings.Repeat("0", 12-len(fs)) + fs
		b.WriteByte('.')
		b.WriteString(strings.TrimRight(fs, "0"))
	}
	return b.String()
}

// Dollars formats the amount for people: "$1.50", "$0.0012" (at least two
// decimals, more when needed to show a non-zero amount, at most 6).
func (p Pico) Dollars() string {
	s := p.String()
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 6 {
		// round to 6 decimals for display
		r := FromUSD(math.Round(p.USD()*1e6) / 1e6)
		whole, frac, _ = strings.Cut(r.String(), ".")
	}
	for len(frac) < 2 {
		frac += "0"
	}
	return "$" + whole + "." + frac
}
