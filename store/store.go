// Package store defines the durable record of llmspend: users, virtual
// keys, spend, the email outbox, budget-alert claims and invitations.
//
// Implementations: store/sqlite (embedded default, pure Go) and
// store/postgres (multi-instance). Both must pass store/storetest.
// The hot path never calls a Store directly: keys are served from an
// in-memory cache and spend is written behind by the ledger in batches.
//
// Times round-trip at nanosecond precision and come back in UTC (budget
// windows are compared for equality, so a stored time that lost precision
// would never match again); nil pointers and nil Models/Metadata stay nil.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/llmspend/llmspend/money"
)

var (
	// ErrNotFound is returned when a user, key, invitation or message does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a unique value (user id, key token, alias) already exists,
	// and when a state change is refused (an invitation accepted twice, a sent message marked failed).
	ErrConflict = errors.New("already exists")
)

// Entity kinds used for spend, resets and alert claims.
const (
	KindKey  = "key"
	KindUser = "user"
)

// User is a person (or service) that owns keys and may have its own budget.
type User struct {
	UserID         string
	UserEmail      string
	UserAlias      string
	UserRole       string
	Models         []string
	MaxBudget      *money.Pico
	SoftBudget     *money.Pico
	BudgetDuration string
	BudgetResetAt  *time.Time
	Spend          money.Pico
	Metadata       map[string]any
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Key is a virtual key. The plain key ("sk-...") is never stored: Token is
// its hex SHA-256, the same value LiteLLM calls `token`.
type Key struct {
	// ID is stable for the key's whole life, across regenerations; spend,
	// daily history and alert claims hang off it.
	ID             string
	Token          string // hex SHA-256 of the plain key; changes on regenerate
	KeyName        string // display form "sk-...abcd"
	KeyAlias       string
	UserID         string
	Models         []string
	MaxBudget      *money.Pico
	SoftBudget     *money.Pico
	BudgetDuration string
	BudgetResetAt  *time.Time
	Spend          money.Pico
	Metadata       map[string]any
	Expires        *time.Time
	Blocked        bool
	CreatedAt      time.Time
	UpdatedAt      time.Time
	LastUsedAt     *time.Time
}

// Users stores users.
type Users interface {
	CreateUser(ctx context.Context, u *User) error // ErrConflict on duplicate UserID
	GetUser(ctx context.Context, userID string) (*User, error)
	ListUsers(ctx context.Context) ([]User, error)
	// UpdateUser replaces every field but Spend, BudgetResetAt and CreatedAt (the ledger owns spend).
	UpdateUser(ctx context.Context, u *User) error
}

// Keys stores virtual keys.
type Keys interface {
	CreateKey(ctx context.Context, k *Key) error // ErrConflict on duplicate ID, Token or non-empty KeyAlias
	GetKeyByToken(ctx context.Context, token string) (*Key, error)
	GetKey(ctx context.Context, id string) (*Key, error)
	// ListKeys lists keys of one user, or all keys when userID is "".
	ListKeys(ctx context.Context, userID string) ([]Key, error)
	// UpdateKey replaces every field but ID, Token, KeyName, Spend,
	// BudgetResetAt, CreatedAt and LastUsedAt. ErrConflict on a taken alias.
	UpdateKey(ctx context.Context, k *Key) error
	// RegenerateKey atomically replaces the token of key id (the old token
	// stops resolving at once); everything else carries over.
	RegenerateKey(ctx context.Context, id, newToken, newKeyName string) (*Key, error)
	// DeleteKeys deletes keys by ID and returns how many existed.
	DeleteKeys(ctx context.Context, ids []string) (int, error)
	// TouchKeys records last-used times in one batch (written behind). It never
	// moves a last-used time backwards and skips unknown keys.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error
}

// SpendDelta adds Amount to one key's or user's spend. Window is the
// budget_reset_at the amount was charged under (nil when the entity has no
// budget_duration): a delta whose window no longer matches the stored
// budget_reset_at belongs to a period that was already reset and is not
// added to spend. This makes deltas and resets commute, across instances.
type SpendDelta struct {
	Kind   string // KindKey or KindUser
	ID     string // key ID or user ID
	Window *time.Time
	Amount money.Pico
}

// SpendReset sets an entity's spend to 0 and moves budget_reset_at from From
// to To, only if budget_reset_at still equals From (idempotent).
type SpendReset struct {
	Kind string
	ID   string
	From *time.Time
	To   time.Time
}

// DailySpend is spend aggregated per key, model and UTC day.
type DailySpend struct {
	KeyID        string
	Model        string
	Day          string // YYYY-MM-DD, UTC
	Spend        money.Pico
	InputTokens  int64
	OutputTokens int64
	Requests     int64
}

// SpendBatch is one write-behind flush, applied in one transaction.
type SpendBatch struct {
	Deltas []SpendDelta
	Resets []SpendReset
	Daily  []DailySpend // added to existing rows
}

// Spend stores spend totals and history.
type Spend interface {
	// ApplySpend applies the batch all or nothing, resets before deltas (so a
	// delta of the window a reset opens counts whatever its place in the
	// batch). Deltas and resets for missing entities change nothing.
	ApplySpend(ctx context.Context, b SpendBatch) error
	// DailySpendFor returns the history of one key between two days inclusive (YYYY-MM-DD).
	DailySpendFor(ctx context.Context, keyID, fromDay, toDay string) ([]DailySpend, error)
}

// Outbox message states.
const (
	StatusPending = "pending"
	StatusSending = "sending"
	StatusSent    = "sent"
	StatusFailed  = "failed"
)

// OutboxMessage is one rendered email waiting for, or done with, delivery.
type OutboxMessage struct {
	ID int64
	// IdempotencyKey is unique per logical email; a second Enqueue with the
	// same key returns the first message's ID. It is also the Resend
	// Idempotency-Key and the seed of the Message-ID header. An empty key
	// never de-duplicates.
	IdempotencyKey string
	Kind           string // invitation, key_created, key_rotated, soft_budget, max_budget, test
	To             []string
	Subject        string
	HTML           string
	Text           string
	// Sensitive bodies (they hold a plain key) are blanked once the message is sent or failed.
	Sensitive     bool
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	LeaseUntil    *time.Time
	LastError     string
	ProviderID    string // the backend's message id or answer
	Backend       string
	CreatedAt     time.Time
	SentAt        *time.Time
}

// Outbox is the durable email queue.
type Outbox interface {
	// Enqueue commits the message (status pending, NextAttemptAt as given or now).
	Enqueue(ctx context.Context, m *OutboxMessage) (int64, error)
	// ClaimDue moves up to limit due messages (pending with NextAttemptAt <= now, or
	// sending with an expired lease) to sending with LeaseUntil = now+lease, and
	// returns them. Concurrent callers never get the same message.
	ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]OutboxMessage, error)
	MarkSent(ctx context.Context, id int64, backend, providerID string, at time.Time) error
	// MarkRetry puts the message back to pending for another attempt at next.
	// ErrConflict if it was sent meanwhile (a worker whose lease ran out must
	// not resurrect a delivered message); likewise MarkFailed.
	MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error
	MarkFailed(ctx context.Context, id int64, errMsg string) error
	// Requeue puts a failed message back to pending (admin "retry"), keeping
	// Attempts. ErrConflict when it is not failed, or is Sensitive (its body
	// was blanked: nothing is left to send).
	Requeue(ctx context.Context, id int64, now time.Time) error
	GetMessage(ctx context.Context, id int64) (*OutboxMessage, error)
	// ListOutbox lists newest first; status "" means all, limit <= 0 no limit.
	ListOutbox(ctx context.Context, status string, limit int) ([]OutboxMessage, error)
	// OutboxCounts returns the number of messages per status, always with the four statuses.
	OutboxCounts(ctx context.Context) (map[string]int, error)
}

// AlertClaim identifies one budget alert: at most one email per claim.
type AlertClaim struct {
	Kind      string // KindKey or KindUser
	ID        string
	AlertType string // "soft_budget" or "max_budget"
	Threshold int    // percent of max budget; 0 for soft budget
	// Window = budget_reset_at + "|" + max_budget: a reset or a changed budget re-arms.
	Window string
}

// AlertRecord is a stored claim, for history pages.
type AlertRecord struct {
	AlertClaim
	SentAt time.Time
}

// Alerts stores budget-alert claims (cluster-wide de-duplication).
type Alerts interface {
	// ClaimAlert returns true when this caller won the claim: no row for the
	// identity (Kind, ID, AlertType, Threshold), or a row with another Window
	// or older than ttl (then it is taken over). ttl <= 0: claims never expire.
	ClaimAlert(ctx context.Context, c AlertClaim, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseAlert deletes the claim (same window) after a permanent send failure.
	ReleaseAlert(ctx context.Context, c AlertClaim) error
	// ListAlerts lists claims newest first; an empty kind or id matches all.
	ListAlerts(ctx context.Context, kind, id string) ([]AlertRecord, error)
}

// Invitation is a stored invitation link id.
type Invitation struct {
	ID         string
	UserID     string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	AcceptedAt *time.Time
}

// Invitations stores invitation ids.
type Invitations interface {
	CreateInvitation(ctx context.Context, inv *Invitation) error
	GetInvitation(ctx context.Context, id string) (*Invitation, error)
	// AcceptInvitation marks it used; ErrConflict if it already was.
	AcceptInvitation(ctx context.Context, id string, at time.Time) error
}

// Store is everything llmspend keeps durably.
type Store interface {
	Users
	Keys
	Spend
	Outbox
	Alerts
	Invitations
	// Ping checks the connection (health routes).
	Ping(ctx context.Context) error
	Close() error
}
