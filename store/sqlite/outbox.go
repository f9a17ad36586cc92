package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/llmspend/llmspend/store"
)

const msgCols = `id, idempotency_key, kind, recipients, subject, html, text, sensitive, status, attempts,
	next_attempt_at, lease_until, last_error, provider_id, backend, created_at, sent_at`

func scanMsg(sc scanner) (*store.OutboxMessage, error) {
	var (
		m                  store.OutboxMessage
		idem               sql.NullString
		recipients         string
		sensitive, nextAt  int64
		createdAt          int64
		leaseUntil, sentAt sql.NullInt64
	)
	if err := sc.Scan(&m.ID, &idem, &m.Kind, &recipients, &m.Subject, &m.HTML, &m.Text, &sensitive,
		&m.Status, &m.Attempts, &nextAt, &leaseUntil, &m.LastError, &m.ProviderID, &m.Backend,
		&createdAt, &sentAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(recipients), &m.To); err != nil {
		return nil, fmt.Errorf("message %d: recipients: %w", m.ID, err)
	}
	m.IdempotencyKey = idem.String
	m.Sensitive = sensitive != 0
	m.NextAttemptAt = fromNanos(nextAt)
	m.LeaseUntil = fromNullNanos(leaseUntil)
	m.CreatedAt = fromNanos(createdAt)
	m.SentAt = fromNullNanos(sentAt)
	return &m, nil
}

func scanMsgs(rows *sql.Rows) ([]store.OutboxMessage, error) {
	defer rows.Close()
	var out []store.OutboxMessage
	for rows.Next() {
		m, err := scanMsg(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, rows.Err()
}

// Enqueue commits m as pending and returns its ID. A zero NextAttemptAt or
// CreatedAt is set to now. When a message with the same IdempotencyKey
// exists, its ID is returned and nothing is written. An empty
// IdempotencyKey is stored as NULL and never de-duplicates.
func (s *Store) Enqueue(ctx context.Context, m *store.OutboxMessage) (int64, error) {
	to := m.To
	if to == nil {
		to = []string{}
	}
	recipients, err := json.Marshal(to)
	if err != nil {
		return 0, wrap(err, "enqueue")
	}
	now := time.Now().UTC()
	next, created := m.NextAttemptAt, m.CreatedAt
	if next.IsZero() {
		next = now
	}
	if created.IsZero() {
		created = now
	}
	var idem any
	if m.IdempotencyKey != "" {
		idem = m.IdempotencyKey
	}
	var id int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO outbox (idempotency_key, kind, recipients, subject, html, text,
		sensitive, status, attempts, next_attempt_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
		ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`,
			idem, m.Kind, string(recipients), m.Subject, m.HTML, m.Text, boolInt(m.Sensitive),
			store.StatusPending, nanos(next), nanos(created)).Scan(&id)
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
	n := nanos(now)
	rows, err := s.w.QueryContext(ctx, `UPDATE outbox SET status = ?, lease_until = ?, attempts = attempts + 1
	WHERE id IN (
		SELECT id FROM outbox
		WHERE (status = ? AND next_attempt_at <= ?) OR (status = ? AND lease_until <= ?)
		ORDER BY next_attempt_at, id
		LIMIT ?
	)
	RETURNING `+msgCols,
		store.StatusSending, nanos(now.Add(lease)),
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
		store.StatusSent, backend, providerID, nanos(at), id)
	return s.checkMsgUpdate(ctx, res, err, id, "mark sent")
}

// MarkRetry puts the message back to pending for another attempt at next.
// store.ErrConflict if it was sent meanwhile (a worker whose lease ran out
// must not resurrect a delivered message).
func (s *Store) MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE outbox SET status = ?, next_attempt_at = ?, last_error = ?,
	lease_until = NULL WHERE id = ? AND status <> ?`,
		store.StatusPending, nanos(next), errMsg, id, store.StatusSent)
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
		store.StatusPending, nanos(now), id, store.StatusFailed)
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
	m, err := scanMsg(s.r.QueryRowContext(ctx, `SELECT `+msgCols+` FROM outbox WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("message %d", id)
	}
	if err != nil {
		return nil, wrap(err, "get message %d", id)
	}
	return m, nil
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
	out := map[string]int{
		store.StatusPending: 0,
		store.StatusSending: 0,
		store.StatusSent:    0,
		store.StatusFailed:  0,
	}
	rows, err := s.r.QueryContext(ctx, `SELECT status, COUNT(*) FROM outbox GROUP BY status`)
	if err != nil {
		return nil, wrap(err, "outbox counts")
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, wrap(err, "outbox counts")
		}
		out[st] = n
	}
	return out, wrap(rows.Err(), "outbox counts")
}
