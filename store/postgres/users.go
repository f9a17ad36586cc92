package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

const userCols = `user_id, user_email, user_alias, user_role, models, max_budget, soft_budget,
	budget_duration, budget_reset_at, spend, metadata, created_at, updated_at`

func scanUser(row pgx.Row) (*store.User, error) {
	var (
		u                     store.User
		models, meta          []byte
		maxB, softB, resetAt  *int64
		spend, created, updat int64
	)
	if err := row.Scan(&u.UserID, &u.UserEmail, &u.UserAlias, &u.UserRole, &models, &maxB, &softB,
		&u.BudgetDuration, &resetAt, &spend, &meta, &created, &updat); err != nil {
		return nil, err
	}
	var err error
	if u.Models, err = fromJSONList(models); err != nil {
		return nil, fmt.Errorf("user %s: models: %w", u.UserID, err)
	}
	if u.Metadata, err = fromJSONMap(meta); err != nil {
		return nil, fmt.Errorf("user %s: metadata: %w", u.UserID, err)
	}
	u.MaxBudget = fromNullPico(maxB)
	u.SoftBudget = fromNullPico(softB)
	u.BudgetResetAt = fromNullNanos(resetAt)
	u.Spend = money.Pico(spend)
	u.CreatedAt = fromNanos(created)
	u.UpdatedAt = fromNanos(updat)
	return &u, nil
}

// CreateUser inserts u, filling CreatedAt and UpdatedAt when zero.
// store.ErrConflict on a duplicate UserID.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if u.UserID == "" {
		return errors.New("postgres: create user: empty user id")
	}
	models, err := jsonList(u.Models)
	if err != nil {
		return wrap(err, "create user %s: models", u.UserID)
	}
	meta, err := jsonMap(u.Metadata)
	if err != nil {
		return wrap(err, "create user %s: metadata", u.UserID)
	}
	now := time.Now().UTC()
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = u.CreatedAt
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO users (`+userCols+`)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		u.UserID, u.UserEmail, u.UserAlias, u.UserRole, models, ppico(u.MaxBudget), ppico(u.SoftBudget),
		u.BudgetDuration, ptime(u.BudgetResetAt), int64(u.Spend), meta, nanos(u.CreatedAt), nanos(u.UpdatedAt))
	return wrap(err, "create user %s", u.UserID)
}

// GetUser returns one user or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, userID string) (*store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE user_id = $1`, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("user %s", userID)
	}
	if err != nil {
		return nil, wrap(err, "get user %s", userID)
	}
	return u, nil
}

// ListUsers returns every user, oldest first.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY created_at, user_id COLLATE "C"`)
	if err != nil {
		return nil, wrap(err, "list users")
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap(err, "list users")
		}
		out = append(out, *u)
	}
	return out, wrap(rows.Err(), "list users")
}

// UpdateUser replaces every field but Spend, BudgetResetAt and CreatedAt.
// A zero UpdatedAt is set to now.
func (s *Store) UpdateUser(ctx context.Context, u *store.User) error {
	models, err := jsonList(u.Models)
	if err != nil {
		return wrap(err, "update user %s: models", u.UserID)
	}
	meta, err := jsonMap(u.Metadata)
	if err != nil {
		return wrap(err, "update user %s: metadata", u.UserID)
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = time.Now().UTC()
	}
	tag, err := s.pool.Exec(ctx, `UPDATE users SET user_email = $1, user_alias = $2, user_role = $3,
	models = $4, max_budget = $5, soft_budget = $6, budget_duration = $7, metadata = $8, updated_at = $9
	WHERE user_id = $10`,
		u.UserEmail, u.UserAlias, u.UserRole, models, ppico(u.MaxBudget), ppico(u.SoftBudget),
		u.BudgetDuration, meta, nanos(u.UpdatedAt), u.UserID)
	if err != nil {
		return wrap(err, "update user %s", u.UserID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("update user %s", u.UserID)
	}
	return nil
}
