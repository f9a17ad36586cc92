// Package sqlite is the embedded store.Store: one SQLite file, pure Go
// (modernc.org/sqlite, no cgo).
//
// Connection discipline: every write goes through a pool of exactly one
// connection whose transactions start with BEGIN IMMEDIATE, so writers in
// this process queue in database/sql instead of failing with SQLITE_BUSY,
// and writers in another process (a second Caddy instance during a config
// reload opens the same file before the old one closes) wait on
// busy_timeout for the file's write lock instead of failing a read-to-write
// lock upgrade. Reads use a separate pool of query-only connections, which
// WAL lets run beside the writer.
//
// Times are stored as INTEGER unix nanoseconds (UTC), so they round-trip
// exactly: the ledger compares budget windows for equality, and a window
// that lost precision in the database would never match again. The zero
// time.Time is stored as 0 and read back as the zero time; nil pointers
// are NULL. Money is INTEGER pico-USD. Models and metadata are JSON text.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is the SQLite implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	path string
	w    *sql.DB // one connection, BEGIN IMMEDIATE: all writes
	r    *sql.DB // query-only connections: plain reads
}

var _ store.Store = (*Store)(nil)

// busyTimeoutMS is how long a connection waits for another process's lock
// before SQLITE_BUSY. In-process writers never wait on it: they queue for
// the single write connection.
const busyTimeoutMS = 5000

// Open opens (creating if needed, with its parent directory) the database
// file at path and brings its schema up to date.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	// The driver treats everything after '?' as its own parameters.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: database path %q must not contain '?'", path)
	}
	if strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: database path %q must be a plain file path", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite: create directory for %s: %w", path, err)
		}
	}

	// The file holds token hashes, addresses and, until they are sent,
	// email bodies with plain keys: create it private. SQLite gives the
	// -wal and -shm files the database file's permissions.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("sqlite: create %s: %w", path, err)
	} else if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: create %s: %w", path, err)
	}

	common := fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS)
	wdsn := path + "?" + common +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	w, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The writer connects first: it switches the file to WAL (a persistent
	// setting) before any reader connection exists.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}

	rdsn := path + "?" + common + "&_pragma=foreign_keys(1)&_query_only=1"
	r, err := sql.Open("sqlite", rdsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return &Store{path: path, w: w, r: r}, nil
}

// Path returns the database file path given to Open.
func (s *Store) Path() string { return s.path }

// Ping checks both pools.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes both pools. The reader closes first so the writer, closing
// last, can checkpoint the WAL into the main file.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// inTx runs fn in one write transaction (BEGIN IMMEDIATE).
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return true
		}
	}
	return false
}

// wrap adds context to err, mapping unique violations to store.ErrConflict.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	if isUnique(err) {
		return fmt.Errorf("sqlite: %s: %w (%v)", msg, store.ErrConflict, err)
	}
	return fmt.Errorf("sqlite: %s: %w", msg, err)
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("sqlite: "+format+": %w", append(args, store.ErrNotFound)...)
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("sqlite: "+format+": %w", append(args, store.ErrConflict)...)
}

// --- value encoding ---

// nanos encodes t as unix nanoseconds; the zero time is 0. Times outside
// the int64 nanosecond range (years before 1678 or after 2262) are clamped
// to it: such values only come from "never"-style inputs.
func nanos(t time.Time) int64 {
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

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// ptime encodes an optional time: nil is NULL.
func ptime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return nanos(*t)
}

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func ppico(p *money.Pico) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

func fromNullPico(n sql.NullInt64) *money.Pico {
	if !n.Valid {
		return nil
	}
	p := money.Pico(n.Int64)
	return &p
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// jsonList encodes a string list; nil is NULL so nil and empty stay distinct.
func jsonList(l []string) (any, error) {
	if l == nil {
		return nil, nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func fromJSONList(s sql.NullString) ([]string, error) {
	if !s.Valid {
		return nil, nil
	}
	var l []string
	if err := json.Unmarshal([]byte(s.String), &l); err != nil {
		return nil, err
	}
	if l == nil {
		l = []string{}
	}
	return l, nil
}

// jsonMap encodes metadata; nil is NULL.
func jsonMap(m map[string]any) (any, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func fromJSONMap(s sql.NullString) (map[string]any, error) {
	if !s.Valid {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s.String), &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// placeholders returns "?,?,...,?" with n marks.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}
