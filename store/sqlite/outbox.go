package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const msgCols = sqlcodec.MsgCols

func scanMsgs(rows *sql.Rows) ([]store.OutboxMessage, error) {
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
	var id int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, sqlcodec.EnqueueSQL, args...).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			// Same transaction, under the write lock: the row cannot vanish in between.
			return tx.QueryRowContext(ctx, `SELECT id FROM outbox WHERE idempotency_key = ?`, idem).Scan(&id)
		}
		return err
	})
	if err != nil {
		return 0, wrap(err, "enqueue %q", m.IdempotencyKey)
	}
	return id, nil
}

// ClaimDue leases up to limit due messages in one UPDATE statement, which
// SQLite runs under the database write lock, so two callers (even in two
// processes) cannot claim the same row. Oldest due first; returned by ID.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.OutboxMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	n := sqlcodec.Nanos(now)
	rows, err := s.w.QueryContext(ctx, `UPDATE outbox SET status = ?, lease_until = ?, attempts = attempts + 1
	WHERE id IN (
		SELECT id FROM outbox
		WHERE (status = ? AND next_attempt_at <= ?) OR (status = ? AND lease_until <= ?)
		ORDER BY next_attempt_at, id
		LIMIT ?
	)
	RETURNING `+msgCols,
		store.StatusSending, sqlcodec.Nanos(now.Add(lease)),
		store.StatusPending, n, store.StatusSending, n, limit)
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

// blankSensitive is the SET fragment that drops the body of a sensitive
// message once it is done with (it holds a plain key).
const blankSensitive = `html = CASE WHEN sensitive <> 0 THEN '' ELSE html END,
	text = CASE WHEN sensitive <> 0 THEN '' ELSE text END`

// MarkSent records the delivery.
func (s *Store) MarkSent(ctx context.Context, id int64, backend, providerID string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET status = ?, backend = ?, provider_id = ?, sent_at = ?,
	lease_until = NULL, last_error = '', `+blankSensitive+` WHERE id = ?`,
		store.StatusSent, backend, providerID, sqlcodec.Nanos(at), id)
	return s.checkMsgUpdate(ctx, res, err, id, "mark sent")
}

// MarkRetry puts the message back to pending for another attempt at next.
// store.ErrConflict if it was sent meanwhile (a worker whose lease ran out
// must not resurrect a delivered message).
func (s *Store) MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET status = ?, next_attempt_at = ?, last_error = ?,
	lease_until = NULL WHERE id = ? AND status <> ?`,
		store.StatusPending, sqlcodec.Nanos(next), errMsg, id, store.StatusSent)
	return s.checkMsgUpdate(ctx, res, err, id, "mark retry")
}

// MarkFailed records a permanent failure. store.ErrConflict if the message
// was sent meanwhile.
func (s *Store) MarkFailed(ctx context.Context, id int64, errMsg string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET status = ?, last_error = ?, lease_until = NULL, `+
		blankSensitive+` WHERE id = ? AND status <> ?`,
		store.StatusFailed, errMsg, id, store.StatusSent)
	return s.checkMsgUpdate(ctx, res, err, id, "mark failed")
}

// Requeue puts a failed message back to pending, due at now. Attempts are
// kept. store.ErrConflict when the message is not failed, or is sensitive
// (its body was blanked when it failed: there is nothing left to send).
func (s *Store) Requeue(ctx context.Context, id int64, now time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET status = ?, next_attempt_at = ?, lease_until = NULL
	WHERE id = ? AND status = ? AND sensitive = 0`,
		store.StatusPending, sqlcodec.Nanos(now), id, store.StatusFailed)
	return s.checkMsgUpdate(ctx, res, err, id, "requeue")
}

// checkMsgUpdate turns "no row changed" into ErrNotFound or ErrConflict.
func (s *Store) checkMsgUpdate(ctx context.Context, res sql.Result, err error, id int64, op string) error {
	if err != nil {
		return wrap(err, "%s %d", op, id)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(err, "%s %d", op, id)
	}
	if n > 0 {
		return nil
	}
	var status string
	err = s.w.QueryRowContext(ctx, `SELECT status FROM outbox WHERE id = ?`, id).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("%s %d", op, id)
	}
	if err != nil {
		return wrap(err, "%s %d", op, id)
	}
	return conflict("%s %d: message is %s", op, id, status)
}

// GetMessage returns one message.
func (s *Store) GetMessage(ctx context.Context, id int64) (*store.OutboxMessage, error) {
	m, err := sqlcodec.ScanMsg(s.r.QueryRowContext(ctx, `SELECT `+msgCols+` FROM outbox WHERE id = ?`, id))
	return found(m, err, "message %d", id)
}

// ListOutbox lists newest first; status "" means all, limit <= 0 means no limit.
func (s *Store) ListOutbox(ctx context.Context, status string, limit int) ([]store.OutboxMessage, error) {
	q := `SELECT ` + msgCols + ` FROM outbox`
	var args []any
	if status != "" {
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	q += ` ORDER BY id DESC`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(err, "list outbox")
	}
	out, err := scanMsgs(rows)
	return out, wrap(err, "list outbox")
}

// OutboxCounts returns the number of messages per status; the four known
// statuses are always present, so gauges drop to 0 rather than vanish.
func (s *Store) OutboxCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, sqlcodec.CountStatusesSQL)
	if err != nil {
		return nil, wrap(err, "outbox counts")
	}
	defer rows.Close()
	out, err := sqlcodec.CountStatuses(rows)
	return out, wrap(err, "outbox counts")
}
