package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

// Statements per entity kind. IS NOT DISTINCT FROM is NULL-safe equality
// (NULL matches NULL), SQLite's "IS".
var (
	deltaSQL = map[string]string{
		store.KindKey:  `UPDATE keys SET spend = spend + $1 WHERE id = $2 AND budget_reset_at IS NOT DISTINCT FROM $3::bigint`,
		store.KindUser: `UPDATE users SET spend = spend + $1 WHERE user_id = $2 AND budget_reset_at IS NOT DISTINCT FROM $3::bigint`,
	}
	resetSQL = map[string]string{
		store.KindKey:  `UPDATE keys SET spend = 0, budget_reset_at = $1 WHERE id = $2 AND budget_reset_at IS NOT DISTINCT FROM $3::bigint`,
		store.KindUser: `UPDATE users SET spend = 0, budget_reset_at = $1 WHERE user_id = $2 AND budget_reset_at IS NOT DISTINCT FROM $3::bigint`,
	}
)

var dailySQL = sqlcodec.Dollar(sqlcodec.DailySQL)

// entity is one key or user touched by a batch.
type entity struct{ kind, id string }

// windowKey is a delta's window as stored: nil or unix nanoseconds.
type windowKey struct {
	set bool
	n   int64
}

// ApplySpend applies one flush in one transaction, sent as one pipeline
// (a single round trip however large the batch).
//
// Semantics are store/sqlite's: resets before deltas, deltas whose window
// no longer matches the stored budget_reset_at ignored, missing entities
// skipped, all or nothing. The order differs only where it cannot matter:
// statements are grouped per entity (its resets, in batch order, then its
// deltas), entities sorted by kind and ID, then daily rows sorted by key.
// Rows of different entities do not interact, and a fixed lock order
// means two instances flushing overlapping batches wait for each other
// instead of deadlocking. Deltas of one entity and window are summed
// first (they would each add the same way), and so are daily rows with
// the same key, model and day.
func (s *Store) ApplySpend(ctx context.Context, b store.SpendBatch) error {
	if err := sqlcodec.CheckKinds(b); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	batch, what := buildSpendBatch(b)
	if batch.Len() == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, batch)
		for _, w := range what {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("%s: %w", w, err)
			}
		}
		return br.Close()
	})
	return wrap(err, "apply spend")
}

// buildSpendBatch orders and merges b into statements (see ApplySpend),
// returning them with a description of each for errors.
func buildSpendBatch(b store.SpendBatch) (*pgx.Batch, []string) {
	type sums struct {
		resets []store.SpendReset
		deltas map[windowKey]money.Pico
		order  []windowKey // first appearance, for a deterministic statement order
	}
	per := map[entity]*sums{}
	get := func(kind, id string) *sums {
		e := entity{kind, id}
		s := per[e]
		if s == nil {
			s = &sums{deltas: map[windowKey]money.Pico{}}
			per[e] = s
		}
		return s
	}
	for _, r := range b.Resets {
		s := get(r.Kind, r.ID)
		s.resets = append(s.resets, r)
	}
	for _, d := range b.Deltas {
		if d.Amount == 0 {
			continue
		}
		s := get(d.Kind, d.ID)
		var w windowKey
		if d.Window != nil {
			w = windowKey{true, sqlcodec.Nanos(*d.Window)}
		}
		if _, ok := s.deltas[w]; !ok {
			s.order = append(s.order, w)
		}
		s.deltas[w] += d.Amount
	}
	ents := make([]entity, 0, len(per))
	for e := range per {
		ents = append(ents, e)
	}
	slices.SortFunc(ents, func(a, b entity) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.id, b.id))
	})

	batch := &pgx.Batch{}
	var what []string
	for _, e := range ents {
		s := per[e]
		for _, r := range s.resets {
			batch.Queue(resetSQL[e.kind], sqlcodec.Nanos(r.To), e.id, sqlcodec.NullNanos(r.From))
			what = append(what, "reset "+e.kind+" "+e.id)
		}
		for _, w := range s.order {
			amt := s.deltas[w]
			if amt == 0 {
				continue
			}
			var win *int64
			if w.set {
				win = &w.n
			}
			batch.Queue(deltaSQL[e.kind], int64(amt), e.id, win)
			what = append(what, "delta "+e.kind+" "+e.id)
		}
	}

	type dayID struct{ key, model, day string }
	daily := map[dayID]*store.DailySpend{}
	var days []dayID
	for _, d := range b.Daily {
		k := dayID{d.KeyID, d.Model, d.Day}
		if a := daily[k]; a != nil {
			a.Spend += d.Spend
			a.InputTokens += d.InputTokens
			a.OutputTokens += d.OutputTokens
			a.Requests += d.Requests
			continue
		}
		c := d
		daily[k] = &c
		days = append(days, k)
	}
	slices.SortFunc(days, func(a, b dayID) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.model, b.model), cmp.Compare(a.day, b.day))
	})
	for _, k := range days {
		d := daily[k]
		batch.Queue(dailySQL, sqlcodec.DailyArgs(d)...)
		what = append(what, "daily "+d.KeyID+" "+d.Model+" "+d.Day)
	}
	return batch, what
}

// DailySpendFor returns one key's history between two days inclusive,
// ordered by day then model.
func (s *Store) DailySpendFor(ctx context.Context, keyID, fromDay, toDay string) ([]store.DailySpend, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sqlcodec.DailyCols+`
	FROM daily_spend WHERE key_id = $1 AND day COLLATE "C" >= $2 AND day COLLATE "C" <= $3
	ORDER BY day COLLATE "C", model COLLATE "C"`,
		keyID, fromDay, toDay)
	if err != nil {
		return nil, wrap(err, "daily spend %s", keyID)
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanDaily)
	return out, wrap(err, "daily spend %s", keyID)
}
