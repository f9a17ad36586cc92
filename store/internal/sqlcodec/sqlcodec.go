// Package sqlcodec is what store/sqlite and store/postgres share below the
// SQL dialect: how store types become column values and back.
//
// Both schemas have the same tables and columns, so the column lists, the
// row scanners and the argument lists for the statements whose text is
// the same in both dialects (but for placeholders) live here once. Values
// are encoded the same way in both: times as BIGINT/INTEGER unix
// nanoseconds (UTC; the zero time is 0, a nil pointer is NULL), money as
// pico-USD, models and metadata as JSON text (nil is NULL, so nil and
// empty stay distinct), flags as BOOLEAN or INTEGER 0/1.
//
// Scanning works with either driver because the destinations are types
// both understand: *int64 and *string for nullable columns, []byte for
// JSON, Flag for booleans. Statements here are written with '?'
// placeholders; store/postgres converts them once with Dollar.
package sqlcodec

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// Scanner is one row: *sql.Row, *sql.Rows, pgx.Row or pgx.Rows.
type Scanner interface {
	Scan(dest ...any) error
}

// Rows is a result set: *sql.Rows or pgx.Rows. Closing stays with the
// caller (the two drivers' Close methods differ).
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// Collect scans every row of rows with scan.
func Collect[T any](rows Rows, scan func(Scanner) (*T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, rows.Err()
}

// Dollar rewrites each '?' placeholder of q as $1, $2, ... in order, for
// PostgreSQL. It does not parse SQL: it is only for the statements in this
// package, which hold no '?' of their own (no string literals, no JSONB
// '?' operator).
func Dollar(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r != '?' {
			b.WriteRune(r)
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// --- value encoding ---

// Nanos encodes t as unix nanoseconds; the zero time is 0. Times outside
// the int64 nanosecond range (years before 1678 or after 2262) are clamped
// to it: such values only come from "never"-style inputs.
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if t.Before(minTime) {
		return math.MinInt64 + 1
	}
	if t.After(maxTime) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minTime = time.Unix(0, math.MinInt64+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

// FromNanos decodes Nanos: 0 is the zero time, anything else UTC.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// NullNanos encodes an optional time: nil is NULL. Both drivers send a nil
// *int64 as NULL and dereference a non-nil one.
func NullNanos(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := Nanos(*t)
	return &n
}

// FromNullNanos decodes NullNanos.
func FromNullNanos(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := FromNanos(*n)
	return &t
}

// NullPico encodes an optional amount: nil is NULL.
func NullPico(p *money.Pico) *int64 {
	if p == nil {
		return nil
	}
	n := int64(*p)
	return &n
}

// FromNullPico decodes NullPico.
func FromNullPico(n *int64) *money.Pico {
	if n == nil {
		return nil
	}
	p := money.Pico(*n)
	return &p
}

// JSONList encodes a string list as JSON text (a TEXT or JSONB column);
// nil is NULL so nil and empty stay distinct.
func JSONList(l []string) (any, error) {
	if l == nil {
		return nil, nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// FromJSONList decodes JSONList: NULL (nil) is nil, "[]" and "null" are
// empty.
func FromJSONList(b []byte) ([]string, error) {
	if b == nil {
		return nil, nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, err
	}
	if l == nil {
		l = []string{}
	}
	return l, nil
}

// JSONMap encodes metadata as JSON text; nil is NULL.
func JSONMap(m map[string]any) (any, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// FromJSONMap decodes JSONMap: NULL (nil) is nil, "{}" and "null" are
// empty.
func FromJSONMap(b []byte) (map[string]any, error) {
	if b == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// Flag scans a flag column: BOOLEAN in PostgreSQL, INTEGER in SQLite
// (any non-zero value is true). Writing one needs no help: both drivers
// take a Go bool (modernc.org/sqlite binds it as 1 or 0).
type Flag bool

// Scan implements sql.Scanner, which pgx honours too.
func (f *Flag) Scan(src any) error {
	switch v := src.(type) {
	case bool:
		*f = Flag(v)
	case int64:
		*f = v != 0
	default:
		return fmt.Errorf("flag column: unsupported value %T", src)
	}
	return nil
}

// stamp fills a new row's CreatedAt (now) and UpdatedAt (CreatedAt) when
// zero.
func stamp(created, updated *time.Time) {
	if created.IsZero() {
		*created = time.Now().UTC()
	}
	if updated.IsZero() {
		*updated = *created
	}
}

// touch sets a zero UpdatedAt to now.
func touch(updated *time.Time) {
	if updated.IsZero() {
		*updated = time.Now().UTC()
	}
}

// jsonFields encodes models and metadata, naming the failing one.
func jsonFields(models []string, meta map[string]any) (any, any, error) {
	m, err := JSONList(models)
	if err != nil {
		return nil, nil, fmt.Errorf("models: %w", err)
	}
	md, err := JSONMap(meta)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	return m, md, nil
}

// CheckKinds rejects a spend batch naming an entity kind other than
// store.KindKey and store.KindUser, before anything is written.
func CheckKinds(b store.SpendBatch) error {
	for _, d := range b.Deltas {
		if !knownKind(d.Kind) {
			return fmt.Errorf("apply spend: unknown kind %q", d.Kind)
		}
	}
	for _, r := range b.Resets {
		if !knownKind(r.Kind) {
			return fmt.Errorf("apply spend: unknown kind %q", r.Kind)
		}
	}
	return nil
}

func knownKind(k string) bool { return k == store.KindKey || k == store.KindUser }
