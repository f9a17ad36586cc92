package sqlite

import (
	"context"
	"errors"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const userCols = sqlcodec.UserCols

// CreateUser inserts u, filling CreatedAt and UpdatedAt when zero.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if u.UserID == "" {
		return errors.New("sqlite: create user: empty user id")
	}
	args, err := sqlcodec.InsertUserArgs(u)
	if err == nil {
		_, err = s.w.ExecContext(ctx, sqlcodec.InsertUserSQL, args...)
	}
	return wrap(err, "create user %s", u.UserID)
}

// GetUser returns one user or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, userID string) (*store.User, error) {
	u, err := sqlcodec.ScanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE user_id = ?`, userID))
	return found(u, err, "user %s", userID)
}

// ListUsers returns every user, oldest first.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY created_at, user_id`)
	if err != nil {
		return nil, wrap(err, "list users")
	}
	defer rows.Close()
	out, err := sqlcodec.Collect(rows, sqlcodec.ScanUser)
	return out, wrap(err, "list users")
}

// UpdateUser replaces every field but Spend, BudgetResetAt and CreatedAt.
// A zero UpdatedAt is set to now.
func (s *Store) UpdateUser(ctx context.Context, u *store.User) error {
	args, err := sqlcodec.UpdateUserArgs(u)
	if err != nil {
		return wrap(err, "update user %s", u.UserID)
	}
	return s.execOne(ctx, sqlcodec.UpdateUserSQL, args, "update user %s", u.UserID)
}
