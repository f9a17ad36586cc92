package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"time"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

// ClaimAlert inserts the claim, or takes over an existing one whose window
// differs or whose sent_at is older than ttl (ttl <= 0: never expires).
// One conditional upsert decides: the caller won exactly when it changed a
// row, and the statement runs under the write lock, so of any number of
// racing callers exactly one wins.
func (s *Store) ClaimAlert(ctx context.Context, c store.AlertClaim, now time.Time, ttl time.Duration) (bool, error) {
	cutoff := int64(math.MinInt64) // no row is older than this
	if ttl > 0 {
		cutoff = sqlcodec.Nanos(now.Add(-ttl))
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO alert_claims (kind, id, alert_type, threshold, claim_window, sent_at)
	VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (kind, id, alert_type, threshold) DO UPDATE SET
		claim_window = excluded.claim_window, sent_at = excluded.sent_at
	WHERE alert_claims.claim_window <> excluded.claim_window OR alert_claims.sent_at < ?`,
		c.Kind, c.ID, c.AlertType, c.Threshold, c.Window, sqlcodec.Nanos(now), cutoff)
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
	rows, err := s.r.QueryContext(ctx, `SELECT `+sqlcodec.AlertCols+`
	FROM alert_claims WHERE (? = '' OR kind = ?) AND (? = '' OR id = ?)
	ORDER BY sent_at DESC, alert_type, threshold`, kind, kind, id, id)
	if err != nil {
		return nil, wrap(err, "list alerts %s %s", kind, id)
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanAlert)
	return out, wrap(err, "list alerts %s %s", kind, id)
}

// CreateInvitation stores inv; a zero CreatedAt is set to now.
// store.ErrConflict on a duplicate ID.
func (s *Store) CreateInvitation(ctx context.Context, inv *store.Invitation) error {
	if inv.ID == "" {
		return errors.New("sqlite: create invitation: empty id")
	}
	_, err := s.w.ExecContext(ctx, sqlcodec.InsertInvitationSQL, sqlcodec.InsertInvitationArgs(inv)...)
	return wrap(err, "create invitation")
}

// GetInvitation returns one invitation.
func (s *Store) GetInvitation(ctx context.Context, id string) (*store.Invitation, error) {
	inv, err := sqlcodec.ScanInvitation(s.r.QueryRowContext(ctx, `SELECT `+sqlcodec.InvitationCols+`
	FROM invitations WHERE id = ?`, id))
	return found(inv, err, "invitation")
}

// AcceptInvitation marks the invitation used, once: store.ErrConflict if it
// already was, store.ErrNotFound if it does not exist. Expiry is the
// caller's check.
func (s *Store) AcceptInvitation(ctx context.Context, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE invitations SET accepted_at = ? WHERE id = ? AND accepted_at IS NULL`,
		sqlcodec.Nanos(at), id)
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
