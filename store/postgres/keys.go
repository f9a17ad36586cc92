package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const keyCols = sqlcodec.KeyCols

var (
	insertKeySQL     = sqlcodec.Dollar(sqlcodec.InsertKeySQL)
	updateKeySQL     = sqlcodec.Dollar(sqlcodec.UpdateKeySQL)
	regenerateKeySQL = sqlcodec.Dollar(sqlcodec.RegenerateKeySQL)
)

// CreateKey inserts k, filling CreatedAt and UpdatedAt when zero.
// store.ErrConflict on a duplicate ID, Token or non-empty KeyAlias.
func (s *Store) CreateKey(ctx context.Context, k *store.Key) error {
	if k.ID == "" || k.Token == "" {
		return errors.New("postgres: create key: empty id or token")
	}
	args, err := sqlcodec.InsertKeyArgs(k)
	if err == nil {
		_, err = s.pool.Exec(ctx, insertKeySQL, args...)
	}
	return wrap(err, "create key %s", k.ID)
}

// GetKeyByToken returns the key whose current token is token.
func (s *Store) GetKeyByToken(ctx context.Context, token string) (*store.Key, error) {
	k, err := sqlcodec.ScanKey(s.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM keys WHERE token = $1`, token))
	// The token itself stays out of errors and logs.
	return found(k, err, "key by token")
}

// GetKey returns the key with this ID.
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	k, err := sqlcodec.ScanKey(s.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM keys WHERE id = $1`, id))
	return found(k, err, "key %s", id)
}

// ListKeys lists the keys of userID, or all keys when userID is "", oldest first.
func (s *Store) ListKeys(ctx context.Context, userID string) ([]store.Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyCols+` FROM keys
	WHERE $1 = '' OR user_id = $1 ORDER BY created_at, id COLLATE "C"`, userID)
	if err != nil {
		return nil, wrap(err, "list keys")
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanKey)
	return out, wrap(err, "list keys")
}

// UpdateKey replaces every field but ID, Token, KeyName, Spend,
// BudgetResetAt, CreatedAt and LastUsedAt. A zero UpdatedAt is set to now.
func (s *Store) UpdateKey(ctx context.Context, k *store.Key) error {
	args, err := sqlcodec.UpdateKeyArgs(k)
	if err != nil {
		return wrap(err, "update key %s", k.ID)
	}
	return s.execOne(ctx, updateKeySQL, args, "update key %s", k.ID)
}

// RegenerateKey swaps the token of key id in one statement and returns the
// key as it now is. store.ErrConflict if newToken belongs to another key.
func (s *Store) RegenerateKey(ctx context.Context, id, newToken, newKeyName string) (*store.Key, error) {
	if newToken == "" {
		return nil, fmt.Errorf("postgres: regenerate key %s: empty token", id)
	}
	k, err := sqlcodec.ScanKey(s.pool.QueryRow(ctx, regenerateKeySQL,
		newToken, newKeyName, time.Now().UnixNano(), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("regenerate key %s", id)
	}
	if err != nil {
		return nil, wrap(err, "regenerate key %s", id)
	}
	return k, nil
}

// DeleteKeys deletes keys by ID in one statement and returns how many
// existed. Their daily history stays (spend reports outlive keys). The
// rows are locked in byte order of ID (COLLATE "C"), the order ApplySpend
// uses, so a delete and a concurrent flush cannot deadlock.
func (s *Store) DeleteKeys(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM keys WHERE id = ANY($1) ORDER BY id COLLATE "C" FOR UPDATE`, sorted); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM keys WHERE id = ANY($1)`, sorted)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, wrap(err, "delete keys")
	}
	return int(n), nil
}

// TouchKeys records last-used times in one statement. A time never moves
// last_used_at backwards (instances flush out of order), and unknown keys
// are skipped: they may have been deleted since the request.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	ids := make([]string, 0, len(lastUsed))
	for id := range lastUsed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ats := make([]int64, len(ids))
	for i, id := range ids {
		ats[i] = sqlcodec.Nanos(lastUsed[id])
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM keys WHERE id = ANY($1) ORDER BY id COLLATE "C" FOR UPDATE`, ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE keys SET last_used_at = t.at
		FROM unnest($1::text[], $2::bigint[]) AS t(id, at)
		WHERE keys.id = t.id AND (keys.last_used_at IS NULL OR keys.last_used_at < t.at)`, ids, ats)
		return err
	})
	return wrap(err, "touch keys")
}
