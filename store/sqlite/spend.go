package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

// Statements per entity kind. "IS ?" is SQLite's NULL-safe equality (both
// NULL matches); PostgreSQL spells it IS NOT DISTINCT FROM.
var (
	deltaSQL = map[string]string{
		store.KindKey:  `UPDATE keys SET spend = spend + ? WHERE id = ? AND budget_reset_at IS ?`,
		store.KindUser: `UPDATE users SET spend = spend + ? WHERE user_id = ? AND budget_reset_at IS ?`,
	}
	resetSQL = map[string]string{
		store.KindKey:  `UPDATE keys SET spend = 0, budget_reset_at = ? WHERE id = ? AND budget_reset_at IS ?`,
		store.KindUser: `UPDATE users SET spend = 0, budget_reset_at = ? WHERE user_id = ? AND budget_reset_at IS ?`,
	}
)

// ApplySpend applies one flush in one transaction: resets first, then
// deltas, then daily rows. Resets go first so a delta charged under the new
// window (To) lands after the reset that opens that window in the same
// batch; deltas of the old window are then ignored, which is what they
// would amount to anyway once the reset zeroes spend. Deltas and resets for
// entities that no longer exist change nothing.
func (s *Store) ApplySpend(ctx context.Context, b store.SpendBatch) error {
	if err := sqlcodec.CheckKinds(b); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if len(b.Deltas) == 0 && len(b.Resets) == 0 && len(b.Daily) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmts := map[string]*sql.Stmt{}
		defer func() {
			for _, st := range stmts {
				st.Close()
			}
		}()
		prep := func(q string) (*sql.Stmt, error) {
			if st, ok := stmts[q]; ok {
				return st, nil
			}
			st, err := tx.PrepareContext(ctx, q)
			if err != nil {
				return nil, err
			}
			stmts[q] = st
			return st, nil
		}
		for _, r := range b.Resets {
			st, err := prep(resetSQL[r.Kind])
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, sqlcodec.Nanos(r.To), r.ID, sqlcodec.NullNanos(r.From)); err != nil {
				return fmt.Errorf("reset %s %s: %w", r.Kind, r.ID, err)
			}
		}
		for _, d := range b.Deltas {
			if d.Amount == 0 {
				continue
			}
			st, err := prep(deltaSQL[d.Kind])
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, int64(d.Amount), d.ID, sqlcodec.NullNanos(d.Window)); err != nil {
				return fmt.Errorf("delta %s %s: %w", d.Kind, d.ID, err)
			}
		}
		if len(b.Daily) > 0 {
			st, err := prep(sqlcodec.DailySQL)
			if err != nil {
				return err
			}
			for _, d := range b.Daily {
				if _, err := st.ExecContext(ctx, sqlcodec.DailyArgs(&d)...); err != nil {
					return fmt.Errorf("daily %s %s %s: %w", d.KeyID, d.Model, d.Day, err)
				}
			}
		}
		return nil
	})
	return wrap(err, "apply spend")
}

// DailySpendFor returns one key's history between two days inclusive,
// ordered by day then model.
func (s *Store) DailySpendFor(ctx context.Context, keyID, fromDay, toDay string) ([]store.DailySpend, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+sqlcodec.DailyCols+`
	FROM daily_spend WHERE key_id = ? AND day >= ? AND day <= ? ORDER BY day, model`, keyID, fromDay, toDay)
	if err != nil {
		return nil, wrap(err, "daily spend %s", keyID)
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanDaily)
	return out, wrap(err, "daily spend %s", keyID)
}
