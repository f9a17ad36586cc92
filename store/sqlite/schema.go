package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are applied in order; migrations[i] brings the schema to
// version i+1. Never edit one that has shipped: append a new one.
//
// The SQL stays close to what PostgreSQL accepts so store/postgres can
// mirror it: INTEGER columns become BIGINT (times are unix nanoseconds
// there too, so windows compare exactly), 0/1 flags become BOOLEAN, JSON
// text becomes JSONB, AUTOINCREMENT becomes an identity column.
// Deliberately no foreign keys from spend, daily history or invitations
// to keys and users: the ledger writes behind, and a batch must not fail
// because a key was deleted between a request and the flush.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE users (
	user_id         TEXT PRIMARY KEY,
	user_email      TEXT NOT NULL DEFAULT '',
	user_alias      TEXT NOT NULL DEFAULT '',
	user_role       TEXT NOT NULL DEFAULT '',
	models          TEXT,
	max_budget      INTEGER,
	soft_budget     INTEGER,
	budget_duration TEXT NOT NULL DEFAULT '',
	budget_reset_at INTEGER,
	spend           INTEGER NOT NULL DEFAULT 0,
	metadata        TEXT,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
);

CREATE TABLE keys (
	id              TEXT PRIMARY KEY,
	token           TEXT NOT NULL UNIQUE,
	key_name        TEXT NOT NULL DEFAULT '',
	key_alias       TEXT NOT NULL DEFAULT '',
	user_id         TEXT NOT NULL DEFAULT '',
	models          TEXT,
	max_budget      INTEGER,
	soft_budget     INTEGER,
	budget_duration TEXT NOT NULL DEFAULT '',
	budget_reset_at INTEGER,
	spend           INTEGER NOT NULL DEFAULT 0,
	metadata        TEXT,
	expires         INTEGER,
	blocked         INTEGER NOT NULL DEFAULT 0,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	last_used_at    INTEGER
);
-- Aliases are unique like LiteLLM's, but many keys have none.
CREATE UNIQUE INDEX keys_alias ON keys (key_alias) WHERE key_alias <> '';
CREATE INDEX keys_user ON keys (user_id);

CREATE TABLE daily_spend (
	key_id        TEXT NOT NULL,
	model         TEXT NOT NULL,
	day           TEXT NOT NULL,
	spend         INTEGER NOT NULL DEFAULT 0,
	input_tokens  INTEGER NOT NULL DEFAULT 0,
	output_tokens INTEGER NOT NULL DEFAULT 0,
	requests      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, model, day)
);

CREATE TABLE outbox (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	idempotency_key TEXT UNIQUE,
	kind            TEXT NOT NULL DEFAULT '',
	recipients      TEXT NOT NULL DEFAULT '[]',
	subject         TEXT NOT NULL DEFAULT '',
	html            TEXT NOT NULL DEFAULT '',
	text            TEXT NOT NULL DEFAULT '',
	sensitive       INTEGER NOT NULL DEFAULT 0,
	status          TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	lease_until     INTEGER,
	last_error      TEXT NOT NULL DEFAULT '',
	provider_id     TEXT NOT NULL DEFAULT '',
	backend         TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL,
	sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

-- claim_window, not "window": WINDOW is reserved in PostgreSQL.
CREATE TABLE alert_claims (
	kind         TEXT NOT NULL,
	id           TEXT NOT NULL,
	alert_type   TEXT NOT NULL,
	threshold    INTEGER NOT NULL,
	claim_window TEXT NOT NULL,
	sent_at      INTEGER NOT NULL,
	PRIMARY KEY (kind, id, alert_type, threshold)
);

CREATE TABLE invitations (
	id          TEXT PRIMARY KEY,
	user_id     TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	accepted_at INTEGER
);
CREATE INDEX invitations_user ON invitations (user_id);
`,
}

// migrate applies the missing migrations, each in its own write
// transaction together with its schema_migrations row, so a crash leaves
// the file at some whole version and two processes opening the same new
// file apply each migration once.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at INTEGER NOT NULL
)`); err != nil {
		return err
	}
	for {
		done, err := migrateOne(ctx, db)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateOne applies the next migration, if any, and reports whether the
// schema was already current.
func migrateOne(ctx context.Context, db *sql.DB) (bool, error) {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: version read and DDL under one lock
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return false, err
	}
	if v > len(migrations) {
		return false, fmt.Errorf("database schema version %d is newer than this build knows (%d): refusing to run an older llmspend on it", v, len(migrations))
	}
	if v == len(migrations) {
		return true, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return false, fmt.Errorf("migration %d: %w", v+1, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		v+1, time.Now().UnixNano()); err != nil {
		return false, fmt.Errorf("migration %d: %w", v+1, err)
	}
	return false, tx.Commit()
}
