package sqlcodec

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// --- users ---

// UserCols lists the users columns in the order ScanUser and
// InsertUserArgs use.
const UserCols = `user_id, user_email, user_alias, user_role, models, max_budget, soft_budget,
	budget_duration, budget_reset_at, spend, metadata, created_at, updated_at`

// InsertUserSQL inserts one user; its arguments are InsertUserArgs.
const InsertUserSQL = `INSERT INTO users (` + UserCols + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`

// InsertUserArgs fills u's CreatedAt and UpdatedAt when zero (after
// encoding, so a refused user is left as it was) and returns the
// arguments of InsertUserSQL.
func InsertUserArgs(u *store.User) ([]any, error) {
	models, meta, err := jsonFields(u.Models, u.Metadata)
	if err != nil {
		return nil, err
	}
	stamp(&u.CreatedAt, &u.UpdatedAt)
	return []any{u.UserID, u.UserEmail, u.UserAlias, u.UserRole, models, NullPico(u.MaxBudget), NullPico(u.SoftBudget),
		u.BudgetDuration, NullNanos(u.BudgetResetAt), int64(u.Spend), meta, Nanos(u.CreatedAt), Nanos(u.UpdatedAt)}, nil
}

// UpdateUserSQL replaces every column but spend, budget_reset_at and
// created_at; its arguments are UpdateUserArgs.
const UpdateUserSQL = `UPDATE users SET user_email = ?, user_alias = ?, user_role = ?,
	models = ?, max_budget = ?, soft_budget = ?, budget_duration = ?, metadata = ?, updated_at = ?
	WHERE user_id = ?`

// UpdateUserArgs sets a zero UpdatedAt to now (after encoding) and returns
// the arguments of UpdateUserSQL.
func UpdateUserArgs(u *store.User) ([]any, error) {
	models, meta, err := jsonFields(u.Models, u.Metadata)
	if err != nil {
		return nil, err
	}
	touch(&u.UpdatedAt)
	return []any{u.UserEmail, u.UserAlias, u.UserRole, models, NullPico(u.MaxBudget), NullPico(u.SoftBudget),
		u.BudgetDuration, meta, Nanos(u.UpdatedAt), u.UserID}, nil
}

// ScanUser reads one row of UserCols.
func ScanUser(sc Scanner) (*store.User, error) {
	var (
		u                     store.User
		models, meta          []byte
		maxB, softB, resetAt  *int64
		spend, created, updat int64
	)
	if err := sc.Scan(&u.UserID, &u.UserEmail, &u.UserAlias, &u.UserRole, &models, &maxB, &softB,
		&u.BudgetDuration, &resetAt, &spend, &meta, &created, &updat); err != nil {
		return nil, err
	}
	var err error
	if u.Models, err = FromJSONList(models); err != nil {
		return nil, fmt.Errorf("user %s: models: %w", u.UserID, err)
	}
	if u.Metadata, err = FromJSONMap(meta); err != nil {
		return nil, fmt.Errorf("user %s: metadata: %w", u.UserID, err)
	}
	u.MaxBudget = FromNullPico(maxB)
	u.SoftBudget = FromNullPico(softB)
	u.BudgetResetAt = FromNullNanos(resetAt)
	u.Spend = money.Pico(spend)
	u.CreatedAt = FromNanos(created)
	u.UpdatedAt = FromNanos(updat)
	return &u, nil
}

// --- keys ---

// KeyCols lists the keys columns in the order ScanKey and InsertKeyArgs
// use.
const KeyCols = `id, token, key_name, key_alias, user_id, models, max_budget, soft_budget,
	budget_duration, budget_reset_at, spend, metadata, expires, blocked, created_at, updated_at, last_used_at`

// InsertKeySQL inserts one key; its arguments are InsertKeyArgs.
const InsertKeySQL = `INSERT INTO keys (` + KeyCols + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`

// InsertKeyArgs fills k's CreatedAt and UpdatedAt when zero (after
// encoding) and returns the arguments of InsertKeySQL.
func InsertKeyArgs(k *store.Key) ([]any, error) {
	models, meta, err := jsonFields(k.Models, k.Metadata)
	if err != nil {
		return nil, err
	}
	stamp(&k.CreatedAt, &k.UpdatedAt)
	return []any{k.ID, k.Token, k.KeyName, k.KeyAlias, k.UserID, models, NullPico(k.MaxBudget), NullPico(k.SoftBudget),
		k.BudgetDuration, NullNanos(k.BudgetResetAt), int64(k.Spend), meta, NullNanos(k.Expires), k.Blocked,
		Nanos(k.CreatedAt), Nanos(k.UpdatedAt), NullNanos(k.LastUsedAt)}, nil
}

// UpdateKeySQL replaces every column but id, token, key_name, spend,
// budget_reset_at, created_at and last_used_at; its arguments are
// UpdateKeyArgs.
const UpdateKeySQL = `UPDATE keys SET key_alias = ?, user_id = ?, models = ?,
	max_budget = ?, soft_budget = ?, budget_duration = ?, metadata = ?, expires = ?, blocked = ?, updated_at = ?
	WHERE id = ?`

// UpdateKeyArgs sets a zero UpdatedAt to now (after encoding) and returns
// the arguments of UpdateKeySQL.
func UpdateKeyArgs(k *store.Key) ([]any, error) {
	models, meta, err := jsonFields(k.Models, k.Metadata)
	if err != nil {
		return nil, err
	}
	touch(&k.UpdatedAt)
	return []any{k.KeyAlias, k.UserID, models, NullPico(k.MaxBudget), NullPico(k.SoftBudget), k.BudgetDuration, meta,
		NullNanos(k.Expires), k.Blocked, Nanos(k.UpdatedAt), k.ID}, nil
}

// RegenerateKeySQL swaps a key's token and returns the row; its arguments
// are the new token, the new key name, updated_at (unix nanoseconds) and
// the key ID.
const RegenerateKeySQL = `UPDATE keys SET token = ?, key_name = ?, updated_at = ?
	WHERE id = ? RETURNING ` + KeyCols

// ScanKey reads one row of KeyCols.
func ScanKey(sc Scanner) (*store.Key, error) {
	var (
		k                    store.Key
		models, meta         []byte
		maxB, softB, resetAt *int64
		expires, lastUsed    *int64
		spend, cr, updat     int64
		blocked              Flag
	)
	if err := sc.Scan(&k.ID, &k.Token, &k.KeyName, &k.KeyAlias, &k.UserID, &models, &maxB, &softB,
		&k.BudgetDuration, &resetAt, &spend, &meta, &expires, &blocked, &cr, &updat, &lastUsed); err != nil {
		return nil, err
	}
	var err error
	if k.Models, err = FromJSONList(models); err != nil {
		return nil, fmt.Errorf("key %s: models: %w", k.ID, err)
	}
	if k.Metadata, err = FromJSONMap(meta); err != nil {
		return nil, fmt.Errorf("key %s: metadata: %w", k.ID, err)
	}
	k.MaxBudget = FromNullPico(maxB)
	k.SoftBudget = FromNullPico(softB)
	k.BudgetResetAt = FromNullNanos(resetAt)
	k.Spend = money.Pico(spend)
	k.Expires = FromNullNanos(expires)
	k.Blocked = bool(blocked)
	k.CreatedAt = FromNanos(cr)
	k.UpdatedAt = FromNanos(updat)
	k.LastUsedAt = FromNullNanos(lastUsed)
	return &k, nil
}

// --- spend ---

// DailySQL adds one row to a key's daily history; its arguments are
// DailyArgs.
const DailySQL = `INSERT INTO daily_spend (key_id, model, day, spend, input_tokens, output_tokens, requests)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key_id, model, day) DO UPDATE SET
	spend = daily_spend.spend + excluded.spend,
	input_tokens = daily_spend.input_tokens + excluded.input_tokens,
	output_tokens = daily_spend.output_tokens + excluded.output_tokens,
	requests = daily_spend.requests + excluded.requests`

// DailyArgs returns the arguments of DailySQL.
func DailyArgs(d *store.DailySpend) []any {
	return []any{d.KeyID, d.Model, d.Day, int64(d.Spend), d.InputTokens, d.OutputTokens, d.Requests}
}

// DailyCols lists the daily_spend columns ScanDaily reads.
const DailyCols = `key_id, model, day, spend, input_tokens, output_tokens, requests`

// ScanDaily reads one row of DailyCols.
func ScanDaily(sc Scanner) (*store.DailySpend, error) {
	var d store.DailySpend
	var spend int64
	if err := sc.Scan(&d.KeyID, &d.Model, &d.Day, &spend, &d.InputTokens, &d.OutputTokens, &d.Requests); err != nil {
		return nil, err
	}
	d.Spend = money.Pico(spend)
	return &d, nil
}

// --- outbox ---

// MsgCols lists the outbox columns in the order ScanMsg uses.
const MsgCols = `id, idempotency_key, kind, recipients, subject, html, text, sensitive, status, attempts,
	next_attempt_at, lease_until, last_error, provider_id, backend, created_at, sent_at`

// EnqueueSQL inserts a pending message unless its idempotency key exists,
// returning its id (no row when it existed); its arguments are
// EnqueueArgs.
const EnqueueSQL = `INSERT INTO outbox (idempotency_key, kind, recipients, subject, html, text,
	sensitive, status, attempts, next_attempt_at, created_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
	ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`

// EnqueueArgs returns the arguments of EnqueueSQL and, separately, the
// idempotency key as stored: NULL (nil) when empty, so it never
// de-duplicates. A zero NextAttemptAt or CreatedAt is stored as now; m is
// not changed.
func EnqueueArgs(m *store.OutboxMessage) (idem *string, args []any, err error) {
	to := m.To
	if to == nil {
		to = []string{}
	}
	recipients, err := json.Marshal(to)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now().UTC()
	next, created := m.NextAttemptAt, m.CreatedAt
	if next.IsZero() {
		next = now
	}
	if created.IsZero() {
		created = now
	}
	if m.IdempotencyKey != "" {
		idem = &m.IdempotencyKey
	}
	return idem, []any{idem, m.Kind, string(recipients), m.Subject, m.HTML, m.Text, m.Sensitive,
		store.StatusPending, Nanos(next), Nanos(created)}, nil
}

// ScanMsg reads one row of MsgCols.
func ScanMsg(sc Scanner) (*store.OutboxMessage, error) {
	var (
		m                  store.OutboxMessage
		idem               *string
		recipients         []byte
		sensitive          Flag
		nextAt, createdAt  int64
		leaseUntil, sentAt *int64
	)
	if err := sc.Scan(&m.ID, &idem, &m.Kind, &recipients, &m.Subject, &m.HTML, &m.Text, &sensitive,
		&m.Status, &m.Attempts, &nextAt, &leaseUntil, &m.LastError, &m.ProviderID, &m.Backend,
		&createdAt, &sentAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(recipients, &m.To); err != nil {
		return nil, fmt.Errorf("message %d: recipients: %w", m.ID, err)
	}
	if idem != nil {
		m.IdempotencyKey = *idem
	}
	m.Sensitive = bool(sensitive)
	m.NextAttemptAt = FromNanos(nextAt)
	m.LeaseUntil = FromNullNanos(leaseUntil)
	m.CreatedAt = FromNanos(createdAt)
	m.SentAt = FromNullNanos(sentAt)
	return &m, nil
}

// CountStatusesSQL counts messages per status; CountStatuses reads it.
const CountStatusesSQL = `SELECT status, COUNT(*) FROM outbox GROUP BY status`

// CountStatuses reads the rows of CountStatusesSQL. The four known
// statuses are always present, so gauges drop to 0 rather than vanish.
func CountStatuses(rows Rows) (map[string]int, error) {
	out := map[string]int{
		store.StatusPending: 0,
		store.StatusSending: 0,
		store.StatusSent:    0,
		store.StatusFailed:  0,
	}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = int(n)
	}
	return out, rows.Err()
}

// --- alerts and invitations ---

// AlertCols lists the alert_claims columns ScanAlert reads.
const AlertCols = `kind, id, alert_type, threshold, claim_window, sent_at`

// ScanAlert reads one row of AlertCols.
func ScanAlert(sc Scanner) (*store.AlertRecord, error) {
	var a store.AlertRecord
	var sent int64
	if err := sc.Scan(&a.Kind, &a.ID, &a.AlertType, &a.Threshold, &a.Window, &sent); err != nil {
		return nil, err
	}
	a.SentAt = FromNanos(sent)
	return &a, nil
}

// InvitationCols lists the invitations columns in the order ScanInvitation
// and InsertInvitationArgs use.
const InvitationCols = `id, user_id, created_at, expires_at, accepted_at`

// InsertInvitationSQL inserts one invitation; its arguments are
// InsertInvitationArgs.
const InsertInvitationSQL = `INSERT INTO invitations (` + InvitationCols + `) VALUES (?, ?, ?, ?, ?)`

// InsertInvitationArgs sets a zero CreatedAt to now and returns the
// arguments of InsertInvitationSQL.
func InsertInvitationArgs(inv *store.Invitation) []any {
	if inv.CreatedAt.IsZero() {
		inv.CreatedAt = time.Now().UTC()
	}
	return []any{inv.ID, inv.UserID, Nanos(inv.CreatedAt), Nanos(inv.ExpiresAt), NullNanos(inv.AcceptedAt)}
}

// ScanInvitation reads one row of InvitationCols.
func ScanInvitation(sc Scanner) (*store.Invitation, error) {
	var inv store.Invitation
	var created, expires int64
	var accepted *int64
	if err := sc.Scan(&inv.ID, &inv.UserID, &created, &expires, &accepted); err != nil {
		return nil, err
	}
	inv.CreatedAt = FromNanos(created)
	inv.ExpiresAt = FromNanos(expires)
	inv.AcceptedAt = FromNullNanos(accepted)
	return &inv, nil
}
