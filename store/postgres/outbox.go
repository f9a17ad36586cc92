package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const msgCols = sqlcodec.MsgCols

var enqueueSQL = sqlcodec.Dollar(sqlcodec.EnqueueSQL)

func scanMsgs(rows pgx.Rows) ([]store.OutboxMessage, error) {
	defer rows.Close()
	return sqlcodec.Collect(rows, sqlcodec.ScanMsg)
}

// Enqueue commits m as pending and returns its ID. A zero NextAttemptAt or
// CreatedAt is set to now. When a message with the same IdempotencyKey
// exists, its ID is returned and nothing is written. An empty
// IdempotencyKey is stored as NULL and never de-duplicates.
func (s *Store) Enqueue(ctx context.Context, m *store.OutboxMessage) (int64, error) {
	idem, args, err := sqlcodec.EnqueueArgs(m)
	if err != nil {
		return 0, wrap(err, "enqueue")
	}
	// Each statement sees rows committed before it starts (READ
	// COMMITTED). A concurrent insert of the same key makes ours wait for
	// it and then do nothing, and the SELECT that follows sees it
	// committed. The loop only covers that row disappearing in between,
	// which nothing in llmspend does (the outbox is never pruned by row).
	for attempt := 0; ; attempt++ {
		var id int64
		err := s.pool.QueryRow(ctx, enqueueSQL, args...).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			err = s.pool.QueryRow(ctx, `SELECT id FROM outbox WHERE idempotency_key = $1`, idem).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) && attempt < 3 {
				continue
			}
		}
		if err != nil {
			return 0, wrap(err, "enqueue %q", m.IdempotencyKey)
		}
		return id, nil
	}
}

// ClaimDue leases up to limit due messages in one statement. The due rows
// are picked with FOR UPDATE SKIP LOCKED: rows another instance is
// claiming right now are skipped rather than waited for, and a row whose
// state changed since this statement's snapshot is re-checked against the
// WHERE clause once locked, so two callers (in any number of processes)
// never claim the same message. Oldest due first; returned by ID.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.OutboxMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	n := sqlcodec.Nanos(now)
	rows, err := s.pool.Query(ctx, `WITH due AS (
		SELECT id FROM outbox
		WHERE (status = $3 AND next_attempt_at <= $4) OR (status = $5 AND lease_until <= $4)
		ORDER BY next_attempt_at, id
		LIMIT $6
		FOR UPDATE SKIP LOCKED
	)
	UPDATE outbox SET status = $1, lease_until = $2, attempts = outbox.attempts + 1
	FROM due WHERE outbox.id = due.id
	RETURNING `+qualified("outbox", msgCols),
		store.StatusSending, sqlcodec.Nanos(now.Add(lease)),
		store.StatusPending, n, store.StatusSending, limit)
	if err != nil {
		return nil, wrap(err, "claim due")
	}
	out, err := scanMsgs(rows)
	if err != nil {
		return nil, wrap(err, "claim due")
	}
	slices.SortFunc(out, func(a, b store.OutboxMessage) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// qualified prefixes every column of a comma-separated list with table.
func qualified(table, cols string) string {
	var out []byte
	start := true
	for i := 0; i < len(cols); i++ {
		c := cols[i]
		if start && c != ' ' && c != '\t' && c != '\n' {
			out = append(out, table...)
			out = append(out, '.')
			start = false
		}
		out = append(out, c)
		if c == ',' {
			start = true
		}
	}
	return string(out)
}

// blankSensitive is the SET fragment that drops the body of a sensitive
// message once it is done with (it holds a plain key).
const blankSensitive = `html = CASE WHEN sensitive THEN '' ELSE html END,
	text = CASE WHEN sensitive THEN '' ELSE text END`

// MarkSent records the delivery.
func (s *Store) MarkSent(ctx context.Context, id int64, backend, providerID string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox SET status = $1, backend = $2, provider_id = $3, sent_at = $4,
	lease_until = NULL, last_error = '', `+blankSensitive+` WHERE id = $5`,
		store.StatusSent, backend, providerID, sqlcodec.Nanos(at), id)
	return s.checkMsgUpdate(ctx, tag, err, id, "mark sent")
}

// MarkRetry puts the message back to pending for another attempt at next.
// store.ErrConflict if it was sent meanwhile (a worker whose lease ran out
// must not resurrect a delivered message).
func (s *Store) MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox SET status = $1, next_attempt_at = $2, last_error = $3,
	lease_until = NULL WHERE id = $4 AND status <> $5`,
		store.StatusPending, sqlcodec.Nanos(next), errMsg, id, store.StatusSent)
	return s.checkMsgUpdate(ctx, tag, err, id, "mark retry")
}

// MarkFailed records a permanent failure. store.ErrConflict if the message
// was sent meanwhile.
func (s *Store) MarkFailed(ctx context.Context, id int64, errMsg string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox SET status = $1, last_error = $2, lease_until = NULL, `+
		blankSensitive+` WHERE id = $3 AND status <> $4`,
		store.StatusFailed, errMsg, id, store.StatusSent)
	return s.checkMsgUpdate(ctx, tag, err, id, "mark failed")
}

// Requeue puts a failed message back to pending, due at now. Attempts are
// kept. store.ErrConflict when the message is not failed, or is sensitive
// (its body was blanked when it failed: there is nothing left to send).
func (s *Store) Requeue(ctx context.Context, id int64, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox SET status = $1, next_attempt_at = $2, lease_until = NULL
	WHERE id = $3 AND status = $4 AND NOT sensitive`,
		store.StatusPending, sqlcodec.Nanos(now), id, store.StatusFailed)
	return s.checkMsgUpdate(ctx, tag, err, id, "requeue")
}

// checkMsgUpdate turns "no row changed" into ErrNotFound or ErrConflict.
func (s *Store) checkMsgUpdate(ctx context.Context, tag pgconn.CommandTag, err error, id int64, op string) error {
	if err != nil {
		return wrap(err, "%s %d", op, id)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	var status string
	err = s.pool.QueryRow(ctx, `SELECT status FROM outbox WHERE id = $1`, id).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("%s %d", op, id)
	}
	if err != nil {
		return wrap(err, "%s %d", op, id)
	}
	return conflict("%s %d: message is %s", op, id, status)
}

// GetMessage returns one message.
func (s *Store) GetMessage(ctx context.Context, id int64) (*store.OutboxMessage, error) {
	m, err := sqlcodec.ScanMsg(s.pool.QueryRow(ctx, `SELECT `+msgCols+` FROM outbox WHERE id = $1`, id))
	return found(m, err, "message %d", id)
}

// ListOutbox lists newest first; status "" means all, limit <= 0 means no limit.
func (s *Store) ListOutbox(ctx context.Context, status string, limit int) ([]store.OutboxMessage, error) {
	var lim *int64
	if limit > 0 {
		l := int64(limit)
		lim = &l
	}
	// LIMIT NULL is no limit.
	rows, err := s.pool.Query(ctx, `SELECT `+msgCols+` FROM outbox
	WHERE $1 = '' OR status = $1 ORDER BY id DESC LIMIT $2`, status, lim)
	if err != nil {
		return nil, wrap(err, "list outbox")
	}
	out, err := scanMsgs(rows)
	return out, wrap(err, "list outbox")
}

// OutboxCounts returns the number of messages per status; the four known
// statuses are always present, so gauges drop to 0 rather than vanish.
func (s *Store) OutboxCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, sqlcodec.CountStatusesSQL)
	if err != nil {
		return nil, wrap(err, "outbox counts")
	}
	defer rows.Close()
	out, err := sqlcodec.CountStatuses(rows)
	return out, wrap(err, "outbox counts")
}
