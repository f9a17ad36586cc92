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
// That encoding, the row scanners and the statements whose text is the
// same in both dialects are shared with store/postgres through
// store/internal/sqlcodec; the SQL that differs stays here.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"

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
	return sqlcodec.Wrap("sqlite", isUnique(err), err, format, args...)
}

// execOne runs q on the writer: store.ErrNotFound when it changed no row.
func (s *Store) execOne(ctx context.Context, q string, args []any, format string, fargs ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return wrap(err, format, fargs...)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap(err, format, fargs...)
	} else if n == 0 {
		return notFound(format, fargs...)
	}
	return nil
}

// found finishes a single-row read: no row is store.ErrNotFound
// ("<what>: not found"), any other error is wrapped as "get <what>".
func found[T any](v *T, err error, what string, args ...any) (*T, error) {
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(what, args...)
	}
	if err != nil {
		return nil, wrap(err, "get "+what, args...)
	}
	return v, nil
}

func notFound(format string, args ...any) error {
	return sqlcodec.NotFound("sqlite", format, args...)
}

func conflict(format string, args ...any) error {
	return sqlcodec.Conflict("sqlite", format, args...)
}

// placeholders returns "?,?,...,?" with n marks.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}
