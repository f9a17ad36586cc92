package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const keyCols = sqlcodec.KeyCols

// CreateKey inserts k, filling CreatedAt and UpdatedAt when zero.
// store.ErrConflict on a duplicate ID, Token or non-empty KeyAlias.
func (s *Store) CreateKey(ctx context.Context, k *store.Key) error {
	if k.ID == "" || k.Token == "" {
		return errors.New("sqlite: create key: empty id or token")
	}
	args, err := sqlcodec.InsertKeyArgs(k)
	if err == nil {
		_, err = s.w.ExecContext(ctx, sqlcodec.InsertKeySQL, args...)
	}
	return wrap(err, "create key %s", k.ID)
}

// GetKeyByToken returns the key whose current token is token.
func (s *Store) GetKeyByToken(ctx context.Context, token string) (*store.Key, error) {
	k, err := sqlcodec.ScanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE token = ?`, token))
	// The token itself stays out of errors and logs.
	return found(k, err, "key by token")
}

// GetKey returns the key with this ID.
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	k, err := sqlcodec.ScanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE id = ?`, id))
	return found(k, err, "key %s", id)
}

// ListKeys lists the keys of userID, or all keys when userID is "", oldest first.
func (s *Store) ListKeys(ctx context.Context, userID string) ([]store.Key, error) {
	q := `SELECT ` + keyCols + ` FROM keys ORDER BY created_at, id`
	var args []any
	if userID != "" {
		q = `SELECT ` + keyCols + ` FROM keys WHERE user_id = ? ORDER BY created_at, id`
		args = append(args, userID)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
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
	return s.execOne(ctx, sqlcodec.UpdateKeySQL, args, "update key %s", k.ID)
}

// RegenerateKey swaps the token of key id in one statement and returns the
// key as it now is. store.ErrConflict if newToken belongs to another key.
func (s *Store) RegenerateKey(ctx context.Context, id, newToken, newKeyName string) (*store.Key, error) {
	if newToken == "" {
		return nil, fmt.Errorf("sqlite: regenerate key %s: empty token", id)
	}
	k, err := sqlcodec.ScanKey(s.w.QueryRowContext(ctx, sqlcodec.RegenerateKeySQL,
		newToken, newKeyName, time.Now().UnixNano(), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("regenerate key %s", id)
	}
	if err != nil {
		return nil, wrap(err, "regenerate key %s", id)
	}
	return k, nil
}

// deleteChunk bounds the number of bound parameters per statement.
const deleteChunk = 500

// DeleteKeys deletes keys by ID, in one transaction, and returns how many
// existed. Their daily history stays (spend reports outlive keys).
func (s *Store) DeleteKeys(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	total := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(ids); start += deleteChunk {
			chunk := ids[start:min(start+deleteChunk, len(ids))]
			args := make([]any, len(chunk))
			for i, id := range chunk {
				args[i] = id
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE id IN (`+placeholders(len(chunk))+`)`, args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			total += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, wrap(err, "delete keys")
	}
	return total, nil
}

// TouchKeys records last-used times in one transaction. A time never moves
// last_used_at backwards (instances flush out of order), and unknown keys
// are skipped: they may have been deleted since the request.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE keys SET last_used_at = ?
		WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, at := range lastUsed {
			n := sqlcodec.Nanos(at)
			if _, err := stmt.ExecContext(ctx, n, id, n); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap(err, "touch keys")
}
