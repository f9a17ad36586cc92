package postgres

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

// ClaimAlert inserts the claim, or takes over an existing one whose window
// differs or whose sent_at is older than ttl (ttl <= 0: never expires).
// One conditional upsert decides, and the caller won exactly when it
// inserted or updated a row. Racing callers (in any number of instances)
// serialise on the row: the losers' ON CONFLICT re-reads the winner's
// committed row, whose window now matches and whose sent_at is fresh, so
// their WHERE is false and they change nothing. Exactly one wins.
func (s *Store) ClaimAlert(ctx context.Context, c store.AlertClaim, now time.Time, ttl time.Duration) (bool, error) {
	cutoff := int64(math.MinInt64) // no row is older than this
	if ttl > 0 {
		cutoff = sqlcodec.Nanos(now.Add(-ttl))
	}
	var won bool
	err := s.pool.QueryRow(ctx, `INSERT INTO alert_claims (kind, id, alert_type, threshold, claim_window, sent_at)
	VALUES ($1, $2, $3, $4, $5, $6)
	ON CONFLICT (kind, id, alert_type, threshold) DO UPDATE SET
		claim_window = excluded.claim_window, sent_at = excluded.sent_at
	WHERE alert_claims.claim_window <> excluded.claim_window OR alert_claims.sent_at < $7
	RETURNING TRUE`,
		c.Kind, c.ID, c.AlertType, c.Threshold, c.Window, sqlcodec.Nanos(now), cutoff).Scan(&won)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err, "claim alert %s %s %s %d", c.Kind, c.ID, c.AlertType, c.Threshold)
	}
	return won, nil
}

// ReleaseAlert deletes the claim if it still holds the same window; a claim
// already taken over for another window is left alone. Releasing a claim
// that does not exist is not an error.
func (s *Store) ReleaseAlert(ctx context.Context, c store.AlertClaim) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM alert_claims
	WHERE kind = $1 AND id = $2 AND alert_type = $3 AND threshold = $4 AND claim_window = $5`,
		c.Kind, c.ID, c.AlertType, c.Threshold, c.Window)
	return wrap(err, "release alert %s %s %s %d", c.Kind, c.ID, c.AlertType, c.Threshold)
}

// ListAlerts lists the claims of one entity, newest first. An empty kind
// or id matches every kind or id.
func (s *Store) ListAlerts(ctx context.Context, kind, id string) ([]store.AlertRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sqlcodec.AlertCols+`
	FROM alert_claims WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR id = $2)
	ORDER BY sent_at DESC, alert_type COLLATE "C", threshold`, kind, id)
	if err != nil {
		return nil, wrap(err, "list alerts %s %s", kind, id)
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanAlert)
	return out, wrap(err, "list alerts %s %s", kind, id)
}

var insertInvitationSQL = sqlcodec.Dollar(sqlcodec.InsertInvitationSQL)

// CreateInvitation stores inv; a zero CreatedAt is set to now.
// store.ErrConflict on a duplicate ID.
func (s *Store) CreateInvitation(ctx context.Context, inv *store.Invitation) error {
	if inv.ID == "" {
		return errors.New("postgres: create invitation: empty id")
	}
	_, err := s.pool.Exec(ctx, insertInvitationSQL, sqlcodec.InsertInvitationArgs(inv)...)
	return wrap(err, "create invitation")
}

// GetInvitation returns one invitation.
func (s *Store) GetInvitation(ctx context.Context, id string) (*store.Invitation, error) {
	inv, err := sqlcodec.ScanInvitation(s.pool.QueryRow(ctx, `SELECT `+sqlcodec.InvitationCols+`
	FROM invitations WHERE id = $1`, id))
	return found(inv, err, "invitation")
}

// AcceptInvitation marks the invitation used, once: store.ErrConflict if it
// already was, store.ErrNotFound if it does not exist. Expiry is the
// caller's check.
func (s *Store) AcceptInvitation(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE invitations SET accepted_at = $1 WHERE id = $2 AND accepted_at IS NULL`,
		sqlcodec.Nanos(at), id)
	if err != nil {
		return wrap(err, "accept invitation")
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	var one int
	err = s.pool.QueryRow(ctx, `SELECT 1 FROM invitations WHERE id = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("accept invitation")
	}
	if err != nil {
		return wrap(err, "accept invitation")
	}
	return conflict("accept invitation: already accepted")
}
