package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"time"

	"github.com/llmspend/llmspend/store"
)

// ClaimAlert inserts the claim, or takes over an existing one whose window
// differs or whose sent_at is older than ttl (ttl <= 0: never expires).
// One conditional upsert decides: the caller won exactly when it changed a
// row, and the statement runs under the write lock, so of any number of
// racing callers exactly one wins.
func (s *Store) ClaimAlert(ctx context.Context, c store.AlertClaim, now time.Time, ttl time.Duration) (bool, error) {
	cutoff := int64(math.MinInt64) // no row is older than this
	if ttl > 0 {
		cutoff = nanos(now.Add(-ttl))
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO alert_claims (kind, id, alert_type, threshold, claim_window, sent_at)
	VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (kind, id, alert_type, threshold) DO UPDATE SET
		claim_window = excluded.claim_window, sent_at = excluded.sent_at
	WHERE alert_claims.claim_window <> excluded.claim_window OR alert_claims.sent_at < ?`,
		c.Kind, c.ID, c.AlertType, c.Threshold, c.Window, nanos(now), cutoff)
	if err != nil {
		return false, wrap(err, "claim alert %s %s %s %d", c.Kind, c.ID, c.AlertType, c.Threshold)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, wrap(err, "claim alert %s %s %s %d", c.Kind, c.ID, c.AlertType, c.Threshold)
	}
	return n > 0, nil
}

// ReleaseAlert deletes the claim if it still holds the same window; a claim
// already taken over for another window is left alone. Releasing a claim
// that does not exist is not an error.
func (s *Store) ReleaseAlert(ctx context.Context, c store.AlertClaim) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM alert_claims
	WHERE kind = ? AND id = ? AND alert_type = ? AND threshold = ? AND claim_window = ?`,
		c.Kind, c.ID, c.AlertType, c.Threshold, c.Window)
	return wrap(err, "release alert %s %s %s %d", c.Kind, c.ID, c.AlertType, c.Threshold)
}

// ListAlerts lists the claims of one entity, newest first. An empty kind
// or id matches every kind or id.
func (s *Store) ListAlerts(ctx context.Context, kind, id string) ([]store.AlertRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT kind, id, alert_type, threshold, claim_window, sent_at
	FROM alert_claims WHERE (? = '' OR kind = ?) AND (? = '' OR id = ?)
	ORDER BY sent_at DESC, alert_type, threshold`, kind, kind, id, id)
	if err != nil {
		return nil, wrap(err, "list alerts %s %s", kind, id)
	}
	defer rows.Close()
	var out []store.AlertRecord
	for rows.Next() {
		var a store.AlertRecord
		var sent int64
		if err := rows.Scan(&a.Kind, &a.ID, &a.AlertType, &a.Threshold, &a.Window, &sent); err != nil {
			return nil, wrap(err, "list alerts %s %s", kind, id)
		}
		a.SentAt = fromNanos(sent)
		out = append(out, a)
	}
	return out, wrap(rows.Err(), "list alerts %s %s", kind, id)
}

// CreateInvitation stores inv; a zero CreatedAt is set to now.
// store.ErrConflict on a duplicate ID.
func (s *Store) CreateInvitation(ctx context.Context, inv *store.Invitation) error {
	if inv.ID == "" {
		return errors.New("sqlite: create invitation: empty id")
	}
	if inv.CreatedAt.IsZero() {
		inv.CreatedAt = time.Now().UTC()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO invitations (id, user_id, created_at, expires_at, accepted_at)
	VALUES (?, ?, ?, ?, ?)`, inv.ID, inv.UserID, nanos(inv.CreatedAt), nanos(inv.ExpiresAt), ptime(inv.AcceptedAt))
	return wrap(err, "create invitation")
}

// GetInvitation returns one invitation.
func (s *Store) GetInvitation(ctx context.Context, id string) (*store.Invitation, error) {
	var inv store.Invitation
	var created, expires int64
	var accepted sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT id, user_id, created_at, expires_at, accepted_at
	FROM invitations WHERE id = ?`, id).Scan(&inv.ID, &inv.UserID, &created, &expires, &accepted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("invitation")
	}
	if err != nil {
		return nil, wrap(err, "get invitation")
	}
	inv.CreatedAt = fromNanos(created)
	inv.ExpiresAt = fromNanos(expires)
	inv.AcceptedAt = fromNullNanos(accepted)
	return &inv, nil
}

// AcceptInvitation marks the invitation used, once: store.ErrConflict if it
// already was, store.ErrNotFound if it does not exist. Expiry is the
// caller's check.
func (s *Store) AcceptInvitation(ctx context.Context, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE invitations SET accepted_at = ? WHERE id = ? AND accepted_at IS NULL`,
		nanos(at), id)
	if err != nil {
		return wrap(err, "accept invitation")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(err, "accept invitation")
	}
	if n > 0 {
		return nil
	}
	var one int
	err = s.w.QueryRowContext(ctx, `SELECT 1 FROM invitations WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("accept invitation")
	}
	if err != nil {
		return wrap(err, "accept invitation")
	}
	return conflict("accept invitation: already accepted")
}
