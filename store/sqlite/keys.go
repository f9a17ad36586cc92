package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

const keyCols = `id, token, key_name, key_alias, user_id, models, max_budget, soft_budget,
	budget_duration, budget_reset_at, spend, metadata, expires, blocked, created_at, updated_at, last_used_at`

func scanKey(sc scanner) (*store.Key, error) {
	var (
		k                         store.Key
		models, meta              sql.NullString
		maxB, softB, resetAt      sql.NullInt64
		expires, lastUsed         sql.NullInt64
		spend, blocked, cr, updat int64
	)
	if err := sc.Scan(&k.ID, &k.Token, &k.KeyName, &k.KeyAlias, &k.UserID, &models, &maxB, &softB,
		&k.BudgetDuration, &resetAt, &spend, &meta, &expires, &blocked, &cr, &updat, &lastUsed); err != nil {
		return nil, err
	}
	var err error
	if k.Models, err = fromJSONList(models); err != nil {
		return nil, fmt.Errorf("key %s: models: %w", k.ID, err)
	}
	if k.Metadata, err = fromJSONMap(meta); err != nil {
		return nil, fmt.Errorf("key %s: metadata: %w", k.ID, err)
	}
	k.MaxBudget = fromNullPico(maxB)
	k.SoftBudget = fromNullPico(softB)
	k.BudgetResetAt = fromNullNanos(resetAt)
	k.Spend = money.Pico(spend)
	k.Expires = fromNullNanos(expires)
	k.Blocked = blocked != 0
	k.CreatedAt = fromNanos(cr)
	k.UpdatedAt = fromNanos(updat)
	k.LastUsedAt = fromNullNanos(lastUsed)
	return &k, nil
}

// CreateKey inserts k, filling CreatedAt and UpdatedAt when zero.
// store.ErrConflict on a duplicate ID, Token or non-empty KeyAlias.
func (s *Store) CreateKey(ctx context.Context, k *store.Key) error {
	if k.ID == "" || k.Token == "" {
		return errors.New("sqlite: create key: empty id or token")
	}
	models, err := jsonList(k.Models)
	if err != nil {
		return wrap(err, "create key %s: models", k.ID)
	}
	meta, err := jsonMap(k.Metadata)
	if err != nil {
		return wrap(err, "create key %s: metadata", k.ID)
	}
	now := time.Now().UTC()
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now
	}
	if k.UpdatedAt.IsZero() {
		k.UpdatedAt = k.CreatedAt
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO keys (`+keyCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		k.ID, k.Token, k.KeyName, k.KeyAlias, k.UserID, models, ppico(k.MaxBudget), ppico(k.SoftBudget),
		k.BudgetDuration, ptime(k.BudgetResetAt), int64(k.Spend), meta, ptime(k.Expires), boolInt(k.Blocked),
		nanos(k.CreatedAt), nanos(k.UpdatedAt), ptime(k.LastUsedAt))
	return wrap(err, "create key %s", k.ID)
}

// GetKeyByToken returns the key whose current token is token.
func (s *Store) GetKeyByToken(ctx context.Context, token string) (*store.Key, error) {
	k, err := scanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE token = ?`, token))
	if errors.Is(err, sql.ErrNoRows) {
		// The token itself stays out of errors and logs.
		return nil, notFound("key by token")
	}
	if err != nil {
		return nil, wrap(err, "get key by token")
	}
	return k, nil
}

// GetKey returns the key with this ID.
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	k, err := scanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("key %s", id)
	}
	if err != nil {
		return nil, wrap(err, "get key %s", id)
	}
	return k, nil
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
	var out []store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, wrap(err, "list keys")
		}
		out = append(out, *k)
	}
	return out, wrap(rows.Err(), "list keys")
}

// UpdateKey replaces every field but ID, Token, KeyName, Spend,
// BudgetResetAt, CreatedAt and LastUsedAt. A zero UpdatedAt is set to now.
func (s *Store) UpdateKey(ctx context.Context, k *store.Key) error {
	models, err := jsonList(k.Models)
	if err != nil {
		return wrap(err, "update key %s: models", k.ID)
	}
	meta, err := jsonMap(k.Metadata)
	if err != nil {
		return wrap(err, "update key %s: metadata", k.ID)
	}
	if k.UpdatedAt.IsZero() {
		k.UpdatedAt = time.Now().UTC()
	}
	res, err := s.w.ExecContext(ctx, `UPDATE keys SET key_alias = ?, user_id = ?, models = ?,
	max_budget = ?, soft_budget = ?, budget_duration = ?, metadata = ?, expires = ?, blocked = ?, updated_at = ?
	WHERE id = ?`,
		k.KeyAlias, k.UserID, models, ppico(k.MaxBudget), ppico(k.SoftBudget), k.BudgetDuration, meta,
		ptime(k.Expires), boolInt(k.Blocked), nanos(k.UpdatedAt), k.ID)
	if err != nil {
		return wrap(err, "update key %s", k.ID)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap(err, "update key %s", k.ID)
	} else if n == 0 {
		return notFound("update key %s", k.ID)
	}
	return nil
}

// RegenerateKey swaps the token of key id in one statement and returns the
// key as it now is. store.ErrConflict if newToken belongs to another key.
func (s *Store) RegenerateKey(ctx context.Context, id, newToken, newKeyName string) (*store.Key, error) {
	if newToken == "" {
		return nil, fmt.Errorf("sqlite: regenerate key %s: empty token", id)
	}
	k, err := scanKey(s.w.QueryRowContext(ctx, `UPDATE keys SET token = ?, key_name = ?, updated_at = ?
	WHERE id = ? RETURNING `+keyCols,
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
			n := nanos(at)
			if _, err := stmt.ExecContext(ctx, n, id, n); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap(err, "touch keys")
}
