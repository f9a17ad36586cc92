// Package postgres is the multi-instance store.Store: PostgreSQL through
// pgx (github.com/jackc/pgx/v5, pgxpool).
//
// The schema mirrors store/sqlite column for column. Times are BIGINT unix
// nanoseconds (UTC), not TIMESTAMPTZ: TIMESTAMPTZ keeps microseconds, and
// the ledger compares budget windows for equality, so a window that lost
// its nanoseconds in the database would never match again. The zero
// time.Time is stored as 0 and read back as the zero time; nil pointers
// are NULL. Money is BIGINT pico-USD. Models and metadata are JSONB. The
// encoding, the row scanners and the statements that read the same in both
// dialects (but for placeholders) are store/sqlite's, shared through
// store/internal/sqlcodec.
//
// Several gateway instances share one database:
//   - migrations run at Open under a session-level advisory lock taken on
//     one dedicated connection, so instances starting together apply each
//     migration once and the losers wait, then find the schema current;
//   - ClaimDue locks due rows with SELECT ... FOR UPDATE SKIP LOCKED, so
//     instances working the same outbox never claim the same message and
//     never wait on each other's claims;
//   - ClaimAlert is one conditional INSERT ... ON CONFLICT DO UPDATE whose
//     row count says who won: exactly one caller cluster-wide;
//   - multi-row writes (ApplySpend, TouchKeys, DeleteKeys) touch rows in a
//     fixed order (table, then id) so concurrent flushes from several
//     instances cannot deadlock; a deadlock or serialization failure that
//     happens anyway is retried a few times, the transaction having rolled
//     back as a whole.
//
// The DSN is anything pgx accepts (URL or key=value). Runtime parameters
// pass through to the server, so "?search_path=tenant_a" (or
// "search_path=tenant_a" in key=value form) puts every table in schema
// tenant_a; Open creates that schema when it is missing. Pool settings
// such as pool_max_conns are honoured too.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

// Store is the PostgreSQL implementation of store.Store. It is safe for
// concurrent use, and several Stores (in several processes) may share one
// database and schema.
type Store struct {
	pool   *pgxpool.Pool
	schema string // first search_path entry, "" when none was given
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn, creates the schema named first in
// its search_path when missing, and brings the tables up to date. ctx
// bounds the whole start, including the wait for another instance's
// migration.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message quotes the DSN with the password redacted only on a
		// best-effort basis: report the underlying cause alone.
		msg := "postgres: invalid DSN (not shown: it may hold a password)"
		if cause := errors.Unwrap(err); cause != nil {
			msg += ": " + cause.Error()
		}
		return nil, errors.New(msg)
	}
	schema, err := firstSchema(cfg.ConnConfig.RuntimeParams["search_path"])
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := migrate(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	return &Store{pool: pool, schema: schema}, nil
}

// Schema returns the schema the tables live in when the DSN set a
// search_path ("" otherwise: the server's default, usually public).
func (s *Store) Schema() string { return s.schema }

// Pool exposes the connection pool, for LISTEN/NOTIFY or health metrics.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that a connection can reach the server.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// firstSchema returns the first entry of a search_path value with the
// server's rules: entries are comma separated, double quotes keep case and
// commas ("" is a quote), unquoted names are lower-cased. "$user" and an
// empty path give "" (nothing to create).
func firstSchema(searchPath string) (string, error) {
	s := strings.TrimSpace(searchPath)
	if s == "" {
		return "", nil
	}
	var name string
	if s[0] == '"' {
		var b strings.Builder
		i := 1
		for {
			if i >= len(s) {
				return "", fmt.Errorf("search_path %q: unterminated quote", searchPath)
			}
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i += 2
					continue
				}
				break
			}
			b.WriteByte(s[i])
			i++
		}
		name = b.String()
		if rest := strings.TrimSpace(s[i+1:]); rest != "" && rest[0] != ',' {
			return "", fmt.Errorf("search_path %q: unexpected text after quoted name", searchPath)
		}
		if name == "" {
			return "", fmt.Errorf("search_path %q: empty schema name", searchPath)
		}
		return name, nil
	}
	name, _, _ = strings.Cut(s, ",")
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return "", fmt.Errorf("search_path %q: empty schema name", searchPath)
	}
	if name == "$user" {
		return "", nil
	}
	return name, nil
}

// txRetries is how many times inTx re-runs a transaction the server
// aborted with a deadlock or serialization failure.
const txRetries = 3

// inTx runs fn in a transaction, re-running it (from scratch: fn must
// reset whatever it accumulates) when the server aborts it with a
// deadlock or serialization failure.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt >= txRetries || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func retryable(err error) bool {
	switch pgCode(err) {
	case "40P01", "40001": // deadlock_detected, serialization_failure
		return true
	}
	return false
}

// wrap adds context to err, mapping unique violations to store.ErrConflict.
func wrap(err error, format string, args ...any) error {
	return sqlcodec.Wrap("postgres", pgCode(err) == "23505", err, format, args...) // unique_violation
}

// execOne runs q: store.ErrNotFound when it changed no row.
func (s *Store) execOne(ctx context.Context, q string, args []any, format string, fargs ...any) error {
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return wrap(err, format, fargs...)
	}
	if tag.RowsAffected() == 0 {
		return notFound(format, fargs...)
	}
	return nil
}

// found finishes a single-row read: no row is store.ErrNotFound
// ("<what>: not found"), any other error is wrapped as "get <what>".
func found[T any](v *T, err error, what string, args ...any) (*T, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(what, args...)
	}
	if err != nil {
		return nil, wrap(err, "get "+what, args...)
	}
	return v, nil
}

func notFound(format string, args ...any) error {
	return sqlcodec.NotFound("postgres", format, args...)
}

func conflict(format string, args ...any) error {
	return sqlcodec.Conflict("postgres", format, args...)
}
