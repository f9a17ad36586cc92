package postgres

import (
	"context"
	"errors"

	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
)

const userCols = sqlcodec.UserCols

var (
	insertUserSQL = sqlcodec.Dollar(sqlcodec.InsertUserSQL)
	updateUserSQL = sqlcodec.Dollar(sqlcodec.UpdateUserSQL)
)

// CreateUser inserts u, filling CreatedAt and UpdatedAt when zero.
// store.ErrConflict on a duplicate UserID.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if u.UserID == "" {
		return errors.New("postgres: create user: empty user id")
	}
	args, err := sqlcodec.InsertUserArgs(u)
	if err == nil {
		_, err = s.pool.Exec(ctx, insertUserSQL, args...)
	}
	return wrap(err, "create user %s", u.UserID)
}

// GetUser returns one user or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, userID string) (*store.User, error) {
	u, err := sqlcodec.ScanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE user_id = $1`, userID))
	return found(u, err, "user %s", userID)
}

// ListUsers returns every user, oldest first.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY created_at, user_id COLLATE "C"`)
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
	return s.execOne(ctx, updateUserSQL, args, "update user %s", u.UserID)
}
