// Package storetest is the conformance suite every store.Store
// implementation runs (store/sqlite, store/postgres):
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... })
//	}
//
// open is called once per subtest and must return an empty store; the
// suite closes nothing itself, so open should register t.Cleanup(Close).
// Subtests run one after another (a PostgreSQL implementation may reuse
// one database and truncate it in open).
//
// Beyond the interface doc comments, the suite pins these behaviours so
// implementations agree:
//   - times round-trip at nanosecond precision (budget windows are compared
//     for equality: a window that loses precision in the database never
//     matches again) and come back in UTC; nil pointers stay nil;
//   - nil Models / Metadata stay nil, empty ones stay empty;
//   - key aliases are unique when non-empty (ErrConflict);
//   - MarkRetry / MarkFailed on a sent message are ErrConflict;
//   - Requeue of a message that is not failed, or is sensitive (its body
//     was blanked), is ErrConflict;
//   - OutboxCounts always has the four statuses;
//   - an empty IdempotencyKey never de-duplicates;
//   - ClaimAlert with ttl <= 0 never expires a claim;
//   - ApplySpend applies resets before deltas, and is all-or-nothing.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// Run runs the whole suite against fresh stores from open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"UserRoundTrip", testUserRoundTrip},
		{"UserNilFields", testUserNilFields},
		{"UserConflictAndNotFound", testUserConflictAndNotFound},
		{"UserUpdate", testUserUpdate},
		{"UserList", testUserList},
		{"KeyRoundTrip", testKeyRoundTrip},
		{"KeyNilFields", testKeyNilFields},
		{"KeyConflicts", testKeyConflicts},
		{"KeyNotFound", testKeyNotFound},
		{"KeyList", testKeyList},
		{"KeyUpdate", testKeyUpdate},
		{"KeyRegenerate", testKeyRegenerate},
		{"KeyDelete", testKeyDelete},
		{"KeyTouch", testKeyTouch},
		{"SpendNullWindow", testSpendNullWindow},
		{"SpendSetWindow", testSpendSetWindow},
		{"SpendResetThenStaleDelta", testSpendResetThenStaleDelta},
		{"SpendResetAndNewWindowInOneBatch", testSpendResetAndNewWindowInOneBatch},
		{"SpendUser", testSpendUser},
		{"SpendMissingEntity", testSpendMissingEntity},
		{"SpendAtomic", testSpendAtomic},
		{"SpendConcurrent", testSpendConcurrent},
		{"DailyAggregation", testDailyAggregation},
		{"OutboxEnqueue", testOutboxEnqueue},
		{"OutboxIdempotency", testOutboxIdempotency},
		{"OutboxClaimDue", testOutboxClaimDue},
		{"OutboxLeaseExpiry", testOutboxLeaseExpiry},
		{"OutboxMarkSent", testOutboxMarkSent},
		{"OutboxMarkRetry", testOutboxMarkRetry},
		{"OutboxMarkFailed", testOutboxMarkFailed},
		{"OutboxRequeue", testOutboxRequeue},
		{"OutboxNotFound", testOutboxNotFound},
		{"OutboxListAndCounts", testOutboxListAndCounts},
		{"OutboxConcurrentClaim", testOutboxConcurrentClaim},
		{"AlertClaim", testAlertClaim},
		{"AlertWindowRearms", testAlertWindowRearms},
		{"AlertTTL", testAlertTTL},
		{"AlertRelease", testAlertRelease},
		{"AlertList", testAlertList},
		{"AlertRace", testAlertRace},
		{"Invitations", testInvitations},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// base has nanoseconds on purpose: see the package doc.
var base = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func tp(t time.Time) *time.Time   { return &t }
func pp(p money.Pico) *money.Pico { return &p }

func ok(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// norm normalises every time.Time reachable in v (a pointer to a struct)
// to UTC without a monotonic reading, so reflect.DeepEqual compares
// instants. It also checks nothing came back in another location.
func norm(v any) {
	normValue(reflect.ValueOf(v))
}

var timeType = reflect.TypeOf(time.Time{})

func normValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normValue(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == timeType {
			if v.CanSet() {
				t := v.Interface().(time.Time)
				if !t.IsZero() {
					v.Set(reflect.ValueOf(t.UTC().Round(0)))
				}
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			normValue(v.Field(i))
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			normValue(v.Index(i))
		}
	}
}

func same(t *testing.T, got, want any, what string) {
	t.Helper()
	norm(got)
	norm(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, deref(got), deref(want))
	}
}

func deref(v any) any {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		return rv.Elem().Interface()
	}
	return v
}

func checkUTC(t *testing.T, what string, ts ...time.Time) {
	t.Helper()
	for _, x := range ts {
		if !x.IsZero() && x.Location() != time.UTC {
			t.Errorf("%s: time %v not in UTC", what, x)
		}
	}
}

func sampleMetadata() map[string]any {
	// Only JSON-native types: numbers come back as float64.
	return map[string]any{
		"team":   "core",
		"n":      float64(3),
		"ok":     true,
		"tags":   []any{"a", "b"},
		"nested": map[string]any{"x": 1.5, "y": nil},
	}
}

func testPing(t *testing.T, s store.Store) {
	ok(t, s.Ping(t.Context()), "ping")
}

// --- users ---

func fullUser(id string) *store.User {
	return &store.User{
		UserID:         id,
		UserEmail:      id + "@example.com",
		UserAlias:      "alias-" + id,
		UserRole:       "internal_user",
		Models:         []string{"gpt-4o", "claude-3-5-sonnet"},
		MaxBudget:      pp(10 * money.USD),
		SoftBudget:     pp(8 * money.USD),
		BudgetDuration: "30d",
		BudgetResetAt:  tp(base.Add(30 * 24 * time.Hour)),
		Spend:          1234567,
		Metadata:       sampleMetadata(),
		CreatedAt:      base,
		UpdatedAt:      base.Add(time.Second),
	}
}

func testUserRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := fullUser("u1")
	ok(t, s.CreateUser(ctx, u), "create user")
	got, err := s.GetUser(ctx, "u1")
	ok(t, err, "get user")
	checkUTC(t, "user", got.CreatedAt, got.UpdatedAt, *got.BudgetResetAt)
	same(t, got, fullUser("u1"), "user round trip")
}

func testUserNilFields(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := &store.User{UserID: "bare", CreatedAt: base, UpdatedAt: base}
	ok(t, s.CreateUser(ctx, u), "create user")
	got, err := s.GetUser(ctx, "bare")
	ok(t, err, "get user")
	same(t, got, &store.User{UserID: "bare", CreatedAt: base, UpdatedAt: base}, "bare user")

	// Empty (not nil) collections stay empty; zero budgets are not nil.
	e := &store.User{UserID: "empty", Models: []string{}, Metadata: map[string]any{},
		MaxBudget: pp(0), SoftBudget: pp(0), CreatedAt: base, UpdatedAt: base}
	ok(t, s.CreateUser(ctx, e), "create user")
	got, err = s.GetUser(ctx, "empty")
	ok(t, err, "get user")
	if got.Models == nil || len(got.Models) != 0 {
		t.Errorf("Models = %#v, want empty non-nil", got.Models)
	}
	if got.Metadata == nil || len(got.Metadata) != 0 {
		t.Errorf("Metadata = %#v, want empty non-nil", got.Metadata)
	}
	if got.MaxBudget == nil || *got.MaxBudget != 0 || got.SoftBudget == nil || *got.SoftBudget != 0 {
		t.Errorf("zero budgets came back as %v / %v", got.MaxBudget, got.SoftBudget)
	}

	// Created without times: the store fills them.
	n := &store.User{UserID: "now"}
	before := time.Now().Add(-time.Second)
	ok(t, s.CreateUser(ctx, n), "create user")
	got, err = s.GetUser(ctx, "now")
	ok(t, err, "get user")
	if got.CreatedAt.Before(before) || got.UpdatedAt.Before(before) {
		t.Errorf("CreatedAt %v / UpdatedAt %v not filled with now", got.CreatedAt, got.UpdatedAt)
	}
}

func testUserConflictAndNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateUser(ctx, fullUser("u1")), "create user")
	isErr(t, s.CreateUser(ctx, fullUser("u1")), store.ErrConflict, "duplicate user")
	_, err := s.GetUser(ctx, "nobody")
	isErr(t, err, store.ErrNotFound, "get missing user")
	isErr(t, s.UpdateUser(ctx, fullUser("nobody")), store.ErrNotFound, "update missing user")
}

func testUserUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateUser(ctx, fullUser("u1")), "create user")
	upd := &store.User{
		UserID:         "u1",
		UserEmail:      "new@example.com",
		UserAlias:      "new alias",
		UserRole:       "proxy_admin",
		Models:         nil,
		MaxBudget:      nil,
		SoftBudget:     pp(5),
		BudgetDuration: "1d",
		BudgetResetAt:  tp(base.Add(time.Hour)), // ignored
		Spend:          999,                     // ignored
		Metadata:       map[string]any{"k": "v"},
		CreatedAt:      base.Add(time.Hour), // ignored
		UpdatedAt:      base.Add(2 * time.Hour),
	}
	ok(t, s.UpdateUser(ctx, upd), "update user")
	got, err := s.GetUser(ctx, "u1")
	ok(t, err, "get user")
	want := fullUser("u1")
	want.UserEmail, want.UserAlias, want.UserRole = upd.UserEmail, upd.UserAlias, upd.UserRole
	want.Models, want.MaxBudget, want.SoftBudget = nil, nil, pp(5)
	want.BudgetDuration, want.Metadata, want.UpdatedAt = "1d", map[string]any{"k": "v"}, upd.UpdatedAt
	same(t, got, want, "updated user")
}

func testUserList(t *testing.T, s store.Store) {
	ctx := t.Context()
	users, err := s.ListUsers(ctx)
	ok(t, err, "list empty")
	if len(users) != 0 {
		t.Fatalf("empty store lists %d users", len(users))
	}
	for i, id := range []string{"c", "a", "b"} {
		u := fullUser(id)
		u.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		ok(t, s.CreateUser(ctx, u), "create user")
	}
	users, err = s.ListUsers(ctx)
	ok(t, err, "list users")
	var ids []string
	for _, u := range users {
		ids = append(ids, u.UserID)
	}
	if !reflect.DeepEqual(ids, []string{"c", "a", "b"}) {
		t.Fatalf("ListUsers order = %v, want creation order [c a b]", ids)
	}
}

// --- keys ---

func fullKey(id string) *store.Key {
	return &store.Key{
		ID:             id,
		Token:          "tok-" + id,
		KeyName:        "sk-...ab" + id,
		KeyAlias:       "alias-" + id,
		UserID:         "u1",
		Models:         []string{"gpt-4o-mini"},
		MaxBudget:      pp(5 * money.USD),
		SoftBudget:     pp(4 * money.USD),
		BudgetDuration: "1mo",
		BudgetResetAt:  tp(base.Add(24 * time.Hour)),
		Spend:          42,
		Metadata:       sampleMetadata(),
		Expires:        tp(base.Add(90 * 24 * time.Hour)),
		Blocked:        true,
		CreatedAt:      base,
		UpdatedAt:      base.Add(time.Second),
		LastUsedAt:     tp(base.Add(time.Minute)),
	}
}

func testKeyRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateKey(ctx, fullKey("k1")), "create key")
	got, err := s.GetKey(ctx, "k1")
	ok(t, err, "get key")
	checkUTC(t, "key", got.CreatedAt, got.UpdatedAt, *got.BudgetResetAt, *got.Expires, *got.LastUsedAt)
	same(t, got, fullKey("k1"), "key by id")
	got, err = s.GetKeyByToken(ctx, "tok-k1")
	ok(t, err, "get key by token")
	same(t, got, fullKey("k1"), "key by token")
}

func testKeyNilFields(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := &store.Key{ID: "bare", Token: "tok-bare", CreatedAt: base, UpdatedAt: base}
	ok(t, s.CreateKey(ctx, k), "create key")
	got, err := s.GetKey(ctx, "bare")
	ok(t, err, "get key")
	same(t, got, &store.Key{ID: "bare", Token: "tok-bare", CreatedAt: base, UpdatedAt: base}, "bare key")

	e := &store.Key{ID: "empty", Token: "tok-empty", Models: []string{}, Metadata: map[string]any{},
		CreatedAt: base, UpdatedAt: base}
	ok(t, s.CreateKey(ctx, e), "create key")
	got, err = s.GetKey(ctx, "empty")
	ok(t, err, "get key")
	if got.Models == nil || len(got.Models) != 0 || got.Metadata == nil || len(got.Metadata) != 0 {
		t.Errorf("empty collections came back as %#v / %#v", got.Models, got.Metadata)
	}
}

func testKeyConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateKey(ctx, fullKey("k1")), "create key")

	dupID := fullKey("k1")
	dupID.Token, dupID.KeyAlias = "other-token", "other-alias"
	isErr(t, s.CreateKey(ctx, dupID), store.ErrConflict, "duplicate id")

	dupTok := fullKey("k2")
	dupTok.Token = "tok-k1"
	isErr(t, s.CreateKey(ctx, dupTok), store.ErrConflict, "duplicate token")

	dupAlias := fullKey("k3")
	dupAlias.KeyAlias = "alias-k1"
	isErr(t, s.CreateKey(ctx, dupAlias), store.ErrConflict, "duplicate alias")

	// Many keys may have no alias.
	for _, id := range []string{"n1", "n2"} {
		k := fullKey(id)
		k.KeyAlias = ""
		ok(t, s.CreateKey(ctx, k), "create key without alias "+id)
	}

	// The failed creates left nothing behind.
	for _, id := range []string{"k2", "k3"} {
		_, err := s.GetKey(ctx, id)
		isErr(t, err, store.ErrNotFound, "key from failed create "+id)
	}

	// Renaming onto a taken alias conflicts too.
	n1 := fullKey("n1")
	n1.KeyAlias = "alias-k1"
	isErr(t, s.UpdateKey(ctx, n1), store.ErrConflict, "update to taken alias")
}

func testKeyNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetKey(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "get key")
	_, err = s.GetKeyByToken(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "get key by token")
	isErr(t, s.UpdateKey(ctx, fullKey("nope")), store.ErrNotFound, "update key")
	_, err = s.RegenerateKey(ctx, "nope", "t", "n")
	isErr(t, err, store.ErrNotFound, "regenerate key")
}

func testKeyList(t *testing.T, s store.Store) {
	ctx := t.Context()
	keys, err := s.ListKeys(ctx, "")
	ok(t, err, "list empty")
	if len(keys) != 0 {
		t.Fatalf("empty store lists %d keys", len(keys))
	}
	for i, id := range []string{"k3", "k1", "k2"} {
		k := fullKey(id)
		k.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		if id == "k2" {
			k.UserID = "u2"
		}
		ok(t, s.CreateKey(ctx, k), "create key")
	}
	ids := func(ks []store.Key) []string {
		var out []string
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	all, err := s.ListKeys(ctx, "")
	ok(t, err, "list all")
	if got := ids(all); !reflect.DeepEqual(got, []string{"k3", "k1", "k2"}) {
		t.Errorf("ListKeys(\"\") = %v, want creation order [k3 k1 k2]", got)
	}
	u1, err := s.ListKeys(ctx, "u1")
	ok(t, err, "list u1")
	if got := ids(u1); !reflect.DeepEqual(got, []string{"k3", "k1"}) {
		t.Errorf("ListKeys(u1) = %v, want [k3 k1]", got)
	}
	none, err := s.ListKeys(ctx, "nobody")
	ok(t, err, "list nobody")
	if len(none) != 0 {
		t.Errorf("ListKeys(nobody) = %v", ids(none))
	}
	same(t, &u1[0], fullKey("k3"), "listed key fields")
}

func testKeyUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateKey(ctx, fullKey("k1")), "create key")
	upd := &store.Key{
		ID:             "k1",
		Token:          "ignored-token",
		KeyName:        "ignored-name",
		KeyAlias:       "renamed",
		UserID:         "u9",
		Models:         []string{"a", "b"},
		MaxBudget:      nil,
		SoftBudget:     pp(7),
		BudgetDuration: "",
		BudgetResetAt:  nil,                 // ignored
		Spend:          777,                 // ignored
		Metadata:       nil,                 // cleared
		Expires:        nil,                 // cleared
		Blocked:        false,               // unblocked
		CreatedAt:      base.Add(time.Hour), // ignored
		UpdatedAt:      base.Add(3 * time.Hour),
		LastUsedAt:     nil, // ignored
	}
	ok(t, s.UpdateKey(ctx, upd), "update key")
	got, err := s.GetKey(ctx, "k1")
	ok(t, err, "get key")
	want := fullKey("k1")
	want.KeyAlias, want.UserID, want.Models = "renamed", "u9", []string{"a", "b"}
	want.MaxBudget, want.SoftBudget, want.BudgetDuration = nil, pp(7), ""
	want.Metadata, want.Expires, want.Blocked, want.UpdatedAt = nil, nil, false, upd.UpdatedAt
	same(t, got, want, "updated key")
	_, err = s.GetKeyByToken(ctx, "ignored-token")
	isErr(t, err, store.ErrNotFound, "UpdateKey must not change the token")
}

func testKeyRegenerate(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateKey(ctx, fullKey("k1")), "create key")
	ok(t, s.CreateKey(ctx, fullKey("k2")), "create key")
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{
		{Kind: store.KindKey, ID: "k1", Window: fullKey("k1").BudgetResetAt, Amount: 8},
	}}), "apply spend")

	_, err := s.RegenerateKey(ctx, "k1", "tok-k2", "sk-...dup")
	isErr(t, err, store.ErrConflict, "regenerate onto another key's token")

	k, err := s.RegenerateKey(ctx, "k1", "tok-new", "sk-...new")
	ok(t, err, "regenerate")
	if k.Token != "tok-new" || k.KeyName != "sk-...new" || k.ID != "k1" {
		t.Fatalf("regenerated key = id %q token %q name %q", k.ID, k.Token, k.KeyName)
	}
	_, err = s.GetKeyByToken(ctx, "tok-k1")
	isErr(t, err, store.ErrNotFound, "old token after regenerate")
	got, err := s.GetKeyByToken(ctx, "tok-new")
	ok(t, err, "new token after regenerate")
	want := fullKey("k1")
	want.Token, want.KeyName, want.Spend = "tok-new", "sk-...new", 42+8
	want.UpdatedAt = got.UpdatedAt // the store may stamp it
	same(t, got, want, "regenerated key carries everything over")
	same(t, k, want, "RegenerateKey result")
}

func testKeyDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, id := range []string{"k1", "k2", "k3"} {
		ok(t, s.CreateKey(ctx, fullKey(id)), "create key")
	}
	n, err := s.DeleteKeys(ctx, nil)
	ok(t, err, "delete none")
	if n != 0 {
		t.Errorf("DeleteKeys(nil) = %d", n)
	}
	n, err = s.DeleteKeys(ctx, []string{"k1", "k3", "missing"})
	ok(t, err, "delete keys")
	if n != 2 {
		t.Errorf("DeleteKeys = %d, want 2 (one id did not exist)", n)
	}
	for _, id := range []string{"k1", "k3"} {
		_, err := s.GetKey(ctx, id)
		isErr(t, err, store.ErrNotFound, "deleted key "+id)
	}
	_, err = s.GetKeyByToken(ctx, "tok-k1")
	isErr(t, err, store.ErrNotFound, "deleted key by token")
	_, err = s.GetKey(ctx, "k2")
	ok(t, err, "surviving key")
	// The token of a deleted key can be reused.
	ok(t, s.CreateKey(ctx, fullKey("k1")), "recreate deleted key")
}

func testKeyTouch(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := fullKey("k1")
	k.LastUsedAt = nil
	ok(t, s.CreateKey(ctx, k), "create key")
	ok(t, s.CreateKey(ctx, fullKey("k2")), "create key")
	ok(t, s.TouchKeys(ctx, nil), "touch nothing")

	t1 := base.Add(time.Hour)
	ok(t, s.TouchKeys(ctx, map[string]time.Time{"k1": t1, "gone": t1}), "touch")
	got, err := s.GetKey(ctx, "k1")
	ok(t, err, "get key")
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(t1) {
		t.Fatalf("LastUsedAt = %v, want %v", got.LastUsedAt, t1)
	}
	// An older flush (another instance) does not move it backwards.
	ok(t, s.TouchKeys(ctx, map[string]time.Time{"k1": base}), "touch older")
	got, _ = s.GetKey(ctx, "k1")
	if !got.LastUsedAt.Equal(t1) {
		t.Fatalf("LastUsedAt moved backwards to %v", got.LastUsedAt)
	}
	t2 := t1.Add(time.Nanosecond)
	ok(t, s.TouchKeys(ctx, map[string]time.Time{"k1": t2, "k2": t2}), "touch newer")
	for _, id := range []string{"k1", "k2"} {
		got, _ = s.GetKey(ctx, id)
		if !got.LastUsedAt.Equal(t2) {
			t.Fatalf("%s LastUsedAt = %v, want %v", id, got.LastUsedAt, t2)
		}
	}
}

// --- spend ---

func keySpend(t *testing.T, s store.Store, id string) (money.Pico, *time.Time) {
	t.Helper()
	k, err := s.GetKey(t.Context(), id)
	ok(t, err, "get key")
	return k.Spend, k.BudgetResetAt
}

func newKey(t *testing.T, s store.Store, id string, resetAt *time.Time) {
	t.Helper()
	k := &store.Key{ID: id, Token: "tok-" + id, BudgetResetAt: resetAt, CreatedAt: base, UpdatedAt: base}
	if resetAt != nil {
		k.BudgetDuration = "1d"
	}
	ok(t, s.CreateKey(t.Context(), k), "create key")
}

func delta(id string, w *time.Time, amt money.Pico) store.SpendDelta {
	return store.SpendDelta{Kind: store.KindKey, ID: id, Window: w, Amount: amt}
}

func testSpendNullWindow(t *testing.T, s store.Store) {
	ctx := t.Context()
	newKey(t, s, "k", nil)
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{
		delta("k", nil, 100),
		delta("k", nil, 23),
		delta("k", tp(base), 1000), // charged under a window the key does not have
	}}), "apply")
	if got, _ := keySpend(t, s, "k"); got != 123 {
		t.Fatalf("spend = %d, want 123 (NULL window matches NULL; a set window does not)", got)
	}
	ok(t, s.ApplySpend(ctx, store.SpendBatch{}), "empty batch")
}

func testSpendSetWindow(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := base.Add(24 * time.Hour)
	newKey(t, s, "k", tp(w))
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{
		delta("k", tp(w), 5),
		delta("k", tp(w.In(time.FixedZone("X", 3600))), 7), // same instant, other zone
		delta("k", nil, 1000),                              // NULL does not match a set window
		delta("k", tp(w.Add(time.Nanosecond)), 1000),       // nanoseconds matter
		delta("k", tp(w.Add(-24*time.Hour)), 1000),         // older window
	}}), "apply")
	if got, _ := keySpend(t, s, "k"); got != 12 {
		t.Fatalf("spend = %d, want 12", got)
	}
}

func testSpendResetThenStaleDelta(t *testing.T, s store.Store) {
	ctx := t.Context()
	w1 := base.Add(24 * time.Hour)
	w2 := w1.Add(24*time.Hour + 987*time.Nanosecond)
	newKey(t, s, "k", tp(w1))
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{delta("k", tp(w1), 50)}}), "apply")

	// A reset from a window that is not the stored one does nothing.
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Resets: []store.SpendReset{
		{Kind: store.KindKey, ID: "k", From: tp(w1.Add(-time.Hour)), To: w2},
		{Kind: store.KindKey, ID: "k", From: nil, To: w2},
	}}), "stale resets")
	if sp, at := keySpend(t, s, "k"); sp != 50 || !at.Equal(w1) {
		t.Fatalf("after stale resets: spend %d at %v, want 50 at %v", sp, at, w1)
	}

	ok(t, s.ApplySpend(ctx, store.SpendBatch{Resets: []store.SpendReset{
		{Kind: store.KindKey, ID: "k", From: tp(w1), To: w2},
	}}), "reset")
	sp, at := keySpend(t, s, "k")
	if sp != 0 || at == nil || !at.Equal(w2) {
		t.Fatalf("after reset: spend %d at %v, want 0 at %v", sp, at, w2)
	}
	// The same reset again (another instance) is a no-op.
	ok(t, s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{delta("k", tp(w2), 3)},
	}), "new window delta")
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Resets: []store.SpendReset{
		{Kind: store.KindKey, ID: "k", From: tp(w1), To: w2},
	}}), "repeated reset")
	// A delta charged before the reset arrives late: ignored.
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{delta("k", tp(w1), 40)}}), "stale delta")
	if sp, _ := keySpend(t, s, "k"); sp != 3 {
		t.Fatalf("spend = %d, want 3 (stale delta ignored, repeated reset a no-op)", sp)
	}

	// A key without a window gets one on its first reset (From nil).
	newKey(t, s, "n", nil)
	ok(t, s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{delta("n", nil, 9)},
	}), "delta")
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Resets: []store.SpendReset{
		{Kind: store.KindKey, ID: "n", From: nil, To: w1},
	}}), "reset from NULL")
	if sp, at := keySpend(t, s, "n"); sp != 0 || at == nil || !at.Equal(w1) {
		t.Fatalf("after reset from NULL: spend %d at %v", sp, at)
	}
}

func testSpendResetAndNewWindowInOneBatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	w1 := base
	w2 := base.Add(time.Hour)
	newKey(t, s, "k", tp(w1))
	// Deltas listed before the reset: the outcome must not depend on order
	// within the batch.
	ok(t, s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{delta("k", tp(w1), 100), delta("k", tp(w2), 7)},
		Resets: []store.SpendReset{{Kind: store.KindKey, ID: "k", From: tp(w1), To: w2}},
	}), "apply")
	sp, at := keySpend(t, s, "k")
	if sp != 7 || !at.Equal(w2) {
		t.Fatalf("spend %d at %v, want 7 at %v (old window dropped, new window kept)", sp, at, w2)
	}
}

func testSpendUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := base.Add(time.Hour)
	u := &store.User{UserID: "u", BudgetDuration: "1h", BudgetResetAt: tp(w), CreatedAt: base, UpdatedAt: base}
	ok(t, s.CreateUser(ctx, u), "create user")
	ok(t, s.CreateUser(ctx, &store.User{UserID: "v", CreatedAt: base, UpdatedAt: base}), "create user")
	newKey(t, s, "u", tp(w)) // a key whose ID equals the user ID must not be touched
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{
		{Kind: store.KindUser, ID: "u", Window: tp(w), Amount: 11},
		{Kind: store.KindUser, ID: "u", Window: nil, Amount: 1000},
		{Kind: store.KindUser, ID: "v", Window: nil, Amount: 4},
	}}), "apply")
	get := func(id string) *store.User {
		u, err := s.GetUser(ctx, id)
		ok(t, err, "get user")
		return u
	}
	if sp := get("u").Spend; sp != 11 {
		t.Fatalf("user u spend = %d, want 11", sp)
	}
	if sp := get("v").Spend; sp != 4 {
		t.Fatalf("user v spend = %d, want 4", sp)
	}
	if sp, _ := keySpend(t, s, "u"); sp != 0 {
		t.Fatalf("key u spend = %d: a user delta touched a key", sp)
	}
	w2 := w.Add(time.Hour)
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Resets: []store.SpendReset{
		{Kind: store.KindUser, ID: "u", From: tp(w), To: w2},
	}}), "reset user")
	got := get("u")
	if got.Spend != 0 || got.BudgetResetAt == nil || !got.BudgetResetAt.Equal(w2) {
		t.Fatalf("after reset: user spend %d at %v", got.Spend, got.BudgetResetAt)
	}
}

func testSpendMissingEntity(t *testing.T, s store.Store) {
	ctx := t.Context()
	// The ledger writes behind: the key may be gone by the flush.
	ok(t, s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{delta("gone", nil, 5), {Kind: store.KindUser, ID: "gone", Amount: 5}},
		Resets: []store.SpendReset{{Kind: store.KindKey, ID: "gone", To: base}},
		Daily:  []store.DailySpend{{KeyID: "gone", Model: "m", Day: "2026-03-01", Spend: 5, Requests: 1}},
	}), "apply for missing entities")
	d, err := s.DailySpendFor(ctx, "gone", "2026-03-01", "2026-03-01")
	ok(t, err, "daily")
	if len(d) != 1 || d[0].Spend != 5 {
		t.Fatalf("daily history of a deleted key = %+v, want kept", d)
	}
}

func testSpendAtomic(t *testing.T, s store.Store) {
	ctx := t.Context()
	newKey(t, s, "k", nil)
	err := s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{delta("k", nil, 5), {Kind: "team", ID: "k", Amount: 1}},
		Daily:  []store.DailySpend{{KeyID: "k", Model: "m", Day: "2026-03-01", Spend: 5}},
	})
	if err == nil {
		t.Fatal("ApplySpend accepted an unknown kind")
	}
	if sp, _ := keySpend(t, s, "k"); sp != 0 {
		t.Fatalf("spend = %d after a failed batch, want 0 (all or nothing)", sp)
	}
	d, err := s.DailySpendFor(ctx, "k", "2026-03-01", "2026-03-01")
	ok(t, err, "daily")
	if len(d) != 0 {
		t.Fatalf("daily rows written by a failed batch: %+v", d)
	}
}

func testSpendConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	newKey(t, s, "k", tp(base))
	const workers, batches, per = 8, 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				var batch store.SpendBatch
				for i := 0; i < per; i++ {
					batch.Deltas = append(batch.Deltas, delta("k", tp(base), 3))
					batch.Daily = append(batch.Daily, store.DailySpend{KeyID: "k", Model: "m", Day: "2026-03-01",
						Spend: 3, InputTokens: 2, OutputTokens: 1, Requests: 1})
				}
				if err := s.ApplySpend(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent ApplySpend: %v", err)
	}
	const n = workers * batches * per
	if sp, _ := keySpend(t, s, "k"); sp != 3*n {
		t.Fatalf("spend = %d, want %d", sp, 3*n)
	}
	d, err := s.DailySpendFor(ctx, "k", "2026-03-01", "2026-03-01")
	ok(t, err, "daily")
	if len(d) != 1 || d[0].Requests != n || d[0].Spend != 3*n || d[0].InputTokens != 2*n || d[0].OutputTokens != n {
		t.Fatalf("daily = %+v, want %d requests", d, n)
	}
}

func testDailyAggregation(t *testing.T, s store.Store) {
	ctx := t.Context()
	row := func(key, model, day string, sp money.Pico, in, out, req int64) store.DailySpend {
		return store.DailySpend{KeyID: key, Model: model, Day: day, Spend: sp, InputTokens: in, OutputTokens: out, Requests: req}
	}
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Daily: []store.DailySpend{
		row("k", "gpt", "2026-03-01", 10, 100, 10, 1),
		row("k", "gpt", "2026-03-01", 5, 50, 5, 1), // same row twice in one batch
		row("k", "claude", "2026-03-01", 7, 70, 7, 1),
		row("k", "gpt", "2026-03-02", 1, 1, 1, 1),
		row("k", "gpt", "2026-02-28", 1, 1, 1, 1),
		row("k", "gpt", "2026-03-04", 1, 1, 1, 1),
		row("other", "gpt", "2026-03-01", 99, 99, 99, 99),
	}}), "batch 1")
	ok(t, s.ApplySpend(ctx, store.SpendBatch{Daily: []store.DailySpend{
		row("k", "gpt", "2026-03-01", 100, 1000, 100, 2),
	}}), "batch 2")
	got, err := s.DailySpendFor(ctx, "k", "2026-03-01", "2026-03-02")
	ok(t, err, "daily")
	want := []store.DailySpend{
		row("k", "claude", "2026-03-01", 7, 70, 7, 1),
		row("k", "gpt", "2026-03-01", 115, 1150, 115, 4),
		row("k", "gpt", "2026-03-02", 1, 1, 1, 1),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("daily:\n got  %+v\n want %+v", got, want)
	}
	got, err = s.DailySpendFor(ctx, "nobody", "2026-01-01", "2026-12-31")
	ok(t, err, "daily nobody")
	if len(got) != 0 {
		t.Fatalf("daily of unknown key = %+v", got)
	}
}

// --- outbox ---

func msg(idem string) *store.OutboxMessage {
	return &store.OutboxMessage{
		IdempotencyKey: idem,
		Kind:           "key_created",
		To:             []string{"a@example.com", "b@example.com"},
		Subject:        "LiteLLM: API Key Created",
		HTML:           "<p>sk-secret</p>",
		Text:           "sk-secret",
		NextAttemptAt:  base,
		CreatedAt:      base,
	}
}

func enqueue(t *testing.T, s store.Store, m *store.OutboxMessage) int64 {
	t.Helper()
	id, err := s.Enqueue(t.Context(), m)
	ok(t, err, "enqueue")
	if id == 0 {
		t.Fatal("Enqueue returned ID 0")
	}
	return id
}

func getMsg(t *testing.T, s store.Store, id int64) *store.OutboxMessage {
	t.Helper()
	m, err := s.GetMessage(t.Context(), id)
	ok(t, err, "get message")
	return m
}

func testOutboxEnqueue(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := msg("e1")
	in.Sensitive = true
	in.Status, in.Attempts, in.LastError = "sent", 9, "junk" // the store decides these
	id := enqueue(t, s, in)
	got := getMsg(t, s, id)
	checkUTC(t, "message", got.NextAttemptAt, got.CreatedAt)
	want := msg("e1")
	want.ID, want.Sensitive, want.Status = id, true, store.StatusPending
	same(t, got, want, "enqueued message")

	// Zero NextAttemptAt means now: due at once.
	z := msg("e2")
	z.NextAttemptAt, z.CreatedAt = time.Time{}, time.Time{}
	zid := enqueue(t, s, z)
	if zid == id {
		t.Fatal("two messages got the same ID")
	}
	gz := getMsg(t, s, zid)
	if gz.NextAttemptAt.IsZero() || gz.CreatedAt.IsZero() || time.Since(gz.NextAttemptAt) > time.Minute {
		t.Fatalf("zero times not filled with now: next %v created %v", gz.NextAttemptAt, gz.CreatedAt)
	}
	claimAt := time.Now().Add(time.Second)
	if claimAt.Before(base) { // a test clock before base: e1 must still be due
		claimAt = base.Add(time.Second)
	}
	claimed, err := s.ClaimDue(ctx, claimAt, time.Minute, 10)
	ok(t, err, "claim")
	if len(claimed) != 2 {
		t.Fatalf("claimed %d messages, want 2", len(claimed))
	}
}

func testOutboxIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, msg("same"))
	again := msg("same")
	again.Subject = "different"
	id2, err := s.Enqueue(ctx, again)
	ok(t, err, "duplicate enqueue is not an error")
	if id2 != id {
		t.Fatalf("duplicate enqueue returned %d, want %d", id2, id)
	}
	if got := getMsg(t, s, id); got.Subject != msg("same").Subject {
		t.Fatalf("duplicate enqueue overwrote the message: subject %q", got.Subject)
	}
	// Still deduplicated after the first was sent.
	ok(t, s.MarkSent(ctx, id, "log", "p1", base), "mark sent")
	id3, err := s.Enqueue(ctx, msg("same"))
	ok(t, err, "enqueue after sent")
	if id3 != id {
		t.Fatalf("enqueue after sent returned %d, want %d", id3, id)
	}
	if n := countAll(t, s); n != 1 {
		t.Fatalf("outbox holds %d messages, want 1", n)
	}
	// Concurrent duplicates: one message.
	var wg sync.WaitGroup
	ids := make([]int64, 10)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			ids[i], err = s.Enqueue(ctx, msg("race"))
			if err != nil {
				t.Errorf("concurrent enqueue: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, x := range ids {
		if x != ids[0] || x == 0 {
			t.Fatalf("concurrent duplicate enqueues returned %v", ids)
		}
	}
	if n := countAll(t, s); n != 2 {
		t.Fatalf("outbox holds %d messages, want 2", n)
	}
	// No idempotency key: never de-duplicated (never silently dropped).
	a, b := enqueue(t, s, msg("")), enqueue(t, s, msg(""))
	if a == b {
		t.Fatalf("two messages without idempotency key share ID %d", a)
	}
	if got := getMsg(t, s, a); got.IdempotencyKey != "" {
		t.Fatalf("IdempotencyKey = %q, want empty", got.IdempotencyKey)
	}
}

func countAll(t *testing.T, s store.Store) int {
	t.Helper()
	c, err := s.OutboxCounts(t.Context())
	ok(t, err, "counts")
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

func testOutboxClaimDue(t *testing.T, s store.Store) {
	ctx := t.Context()
	early := msg("early")
	early.NextAttemptAt = base.Add(-time.Minute)
	now := msg("now")
	late := msg("late")
	late.NextAttemptAt = base.Add(time.Nanosecond)
	idEarly, idNow, idLate := enqueue(t, s, early), enqueue(t, s, now), enqueue(t, s, late)

	none, err := s.ClaimDue(ctx, base, time.Minute, 0)
	ok(t, err, "claim 0")
	if len(none) != 0 {
		t.Fatalf("limit 0 claimed %d", len(none))
	}

	got, err := s.ClaimDue(ctx, base, time.Minute, 1)
	ok(t, err, "claim 1")
	if len(got) != 1 || got[0].ID != idEarly {
		t.Fatalf("first claim = %v, want the oldest due message %d", ids(got), idEarly)
	}
	got, err = s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim rest")
	if len(got) != 1 || got[0].ID != idNow {
		t.Fatalf("second claim = %v, want only %d (NextAttemptAt <= now; %d is not due)", ids(got), idNow, idLate)
	}
	m := got[0]
	if m.Status != store.StatusSending || m.Attempts != 1 || m.LeaseUntil == nil || !m.LeaseUntil.Equal(base.Add(time.Minute)) {
		t.Fatalf("claimed message: status %q attempts %d lease %v", m.Status, m.Attempts, m.LeaseUntil)
	}
	if m.HTML != now.HTML || len(m.To) != 2 || m.Subject != now.Subject {
		t.Fatalf("claimed message lost its content: %+v", m)
	}
	same(t, getMsg(t, s, idNow), &m, "stored claimed message")

	got, err = s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim again")
	if len(got) != 0 {
		t.Fatalf("leased messages claimed again: %v", ids(got))
	}
	got, err = s.ClaimDue(ctx, base.Add(time.Nanosecond), time.Minute, 10)
	ok(t, err, "claim late")
	if len(got) != 1 || got[0].ID != idLate {
		t.Fatalf("claim at +1ns = %v, want %d", ids(got), idLate)
	}
}

func ids(ms []store.OutboxMessage) []int64 {
	var out []int64
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func testOutboxLeaseExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, msg("lease"))
	got, err := s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim")
	if len(got) != 1 {
		t.Fatalf("claimed %d", len(got))
	}
	got, err = s.ClaimDue(ctx, base.Add(time.Minute-time.Nanosecond), time.Minute, 10)
	ok(t, err, "claim before lease end")
	if len(got) != 0 {
		t.Fatalf("claimed a message with a live lease: %v", ids(got))
	}
	// The worker died: once the lease runs out another one takes over.
	at := base.Add(time.Minute)
	got, err = s.ClaimDue(ctx, at, 30*time.Second, 10)
	ok(t, err, "claim after lease end")
	if len(got) != 1 || got[0].ID != id {
		t.Fatalf("expired lease not re-claimed: %v", ids(got))
	}
	if got[0].Attempts != 2 || !got[0].LeaseUntil.Equal(at.Add(30*time.Second)) {
		t.Fatalf("re-claim: attempts %d lease %v", got[0].Attempts, got[0].LeaseUntil)
	}
}

func testOutboxMarkSent(t *testing.T, s store.Store) {
	ctx := t.Context()
	sens := msg("sens")
	sens.Sensitive = true
	plain := msg("plain")
	idS, idP := enqueue(t, s, sens), enqueue(t, s, plain)
	_, err := s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim")
	at := base.Add(5 * time.Second)
	ok(t, s.MarkSent(ctx, idS, "resend", "re_123", at), "mark sent")
	ok(t, s.MarkSent(ctx, idP, "smtp", "250 ok", at), "mark sent")

	gs := getMsg(t, s, idS)
	if gs.Status != store.StatusSent || gs.HTML != "" || gs.Text != "" {
		t.Fatalf("sent sensitive message: status %q html %q text %q (body must be blanked)", gs.Status, gs.HTML, gs.Text)
	}
	if gs.Backend != "resend" || gs.ProviderID != "re_123" || gs.SentAt == nil || !gs.SentAt.Equal(at) {
		t.Fatalf("sent message: backend %q provider %q sent %v", gs.Backend, gs.ProviderID, gs.SentAt)
	}
	if gs.LeaseUntil != nil {
		t.Errorf("sent message keeps lease %v", gs.LeaseUntil)
	}
	if gs.Subject != sens.Subject || len(gs.To) != 2 {
		t.Errorf("blanking removed more than the body: %+v", gs)
	}
	gp := getMsg(t, s, idP)
	if gp.Status != store.StatusSent || gp.HTML != plain.HTML || gp.Text != plain.Text {
		t.Fatalf("sent plain message: status %q html %q text %q (body must stay)", gp.Status, gp.HTML, gp.Text)
	}
	// Nothing sent is claimed again, even much later.
	got, err := s.ClaimDue(ctx, base.Add(24*time.Hour), time.Minute, 10)
	ok(t, err, "claim")
	if len(got) != 0 {
		t.Fatalf("sent messages claimed: %v", ids(got))
	}
	// A worker whose lease ran out cannot resurrect or fail a sent message.
	isErr(t, s.MarkRetry(ctx, idP, base, "late"), store.ErrConflict, "retry after sent")
	isErr(t, s.MarkFailed(ctx, idP, "late"), store.ErrConflict, "fail after sent")
	if gp := getMsg(t, s, idP); gp.Status != store.StatusSent {
		t.Fatalf("status after late marks = %q", gp.Status)
	}
}

func testOutboxMarkRetry(t *testing.T, s store.Store) {
	ctx := t.Context()
	m := msg("retry")
	m.Sensitive = true
	id := enqueue(t, s, m)
	_, err := s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim")
	next := base.Add(10 * time.Second)
	ok(t, s.MarkRetry(ctx, id, next, "421 try later"), "mark retry")
	g := getMsg(t, s, id)
	if g.Status != store.StatusPending || !g.NextAttemptAt.Equal(next) || g.LastError != "421 try later" || g.LeaseUntil != nil {
		t.Fatalf("after retry: %+v", g)
	}
	if g.HTML != m.HTML || g.Text != m.Text {
		t.Fatal("retry blanked a sensitive body that is still needed")
	}
	got, err := s.ClaimDue(ctx, next.Add(-time.Nanosecond), time.Minute, 10)
	ok(t, err, "claim early")
	if len(got) != 0 {
		t.Fatal("retried message claimed before NextAttemptAt")
	}
	got, err = s.ClaimDue(ctx, next, time.Minute, 10)
	ok(t, err, "claim at next")
	if len(got) != 1 || got[0].Attempts != 2 {
		t.Fatalf("retried message claim: %+v", got)
	}
}

func testOutboxMarkFailed(t *testing.T, s store.Store) {
	ctx := t.Context()
	sens := msg("sens")
	sens.Sensitive = true
	idS, idP := enqueue(t, s, sens), enqueue(t, s, msg("plain"))
	_, err := s.ClaimDue(ctx, base, time.Minute, 10)
	ok(t, err, "claim")
	ok(t, s.MarkFailed(ctx, idS, "550 no such user"), "mark failed")
	ok(t, s.MarkFailed(ctx, idP, "550 no such user"), "mark failed")
	gs := getMsg(t, s, idS)
	if gs.Status != store.StatusFailed || gs.LastError != "550 no such user" || gs.HTML != "" || gs.Text != "" || gs.LeaseUntil != nil {
		t.Fatalf("failed sensitive message: %+v", gs)
	}
	if gp := getMsg(t, s, idP); gp.HTML == "" || gp.Text == "" {
		t.Fatal("failed plain message lost its body")
	}
	got, err := s.ClaimDue(ctx, base.Add(24*time.Hour), time.Minute, 10)
	ok(t, err, "claim")
	if len(got) != 0 {
		t.Fatalf("failed messages claimed: %v", ids(got))
	}
}

func testOutboxRequeue(t *testing.T, s store.Store) {
	ctx := t.Context()
	sens := msg("sens")
	sens.Sensitive = true
	id, idS, idPending := enqueue(t, s, msg("plain")), enqueue(t, s, sens), enqueue(t, s, msg("pending"))
	isErr(t, s.Requeue(ctx, idPending, base), store.ErrConflict, "requeue pending")
	_, err := s.ClaimDue(ctx, base, time.Minute, 2)
	ok(t, err, "claim")
	isErr(t, s.Requeue(ctx, id, base), store.ErrConflict, "requeue sending")
	ok(t, s.MarkFailed(ctx, id, "boom"), "fail")
	ok(t, s.MarkFailed(ctx, idS, "boom"), "fail")
	isErr(t, s.Requeue(ctx, idS, base), store.ErrConflict, "requeue sensitive (body gone)")

	at := base.Add(time.Hour)
	ok(t, s.Requeue(ctx, id, at), "requeue failed")
	g := getMsg(t, s, id)
	if g.Status != store.StatusPending || !g.NextAttemptAt.Equal(at) || g.HTML == "" || g.Attempts != 1 {
		t.Fatalf("requeued (want pending at %v, body kept, attempts kept at 1): %+v", at, g)
	}
	got, err := s.ClaimDue(ctx, at, time.Minute, 10)
	ok(t, err, "claim")
	found := false
	for _, m := range got {
		found = found || m.ID == id
	}
	if !found {
		t.Fatalf("requeued message not claimed: %v", ids(got))
	}
	ok(t, s.MarkSent(ctx, id, "log", "", at), "sent")
	isErr(t, s.Requeue(ctx, id, at), store.ErrConflict, "requeue sent")
}

func testOutboxNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetMessage(ctx, 424242)
	isErr(t, err, store.ErrNotFound, "get")
	isErr(t, s.MarkSent(ctx, 424242, "b", "p", base), store.ErrNotFound, "mark sent")
	isErr(t, s.MarkRetry(ctx, 424242, base, "e"), store.ErrNotFound, "mark retry")
	isErr(t, s.MarkFailed(ctx, 424242, "e"), store.ErrNotFound, "mark failed")
	isErr(t, s.Requeue(ctx, 424242, base), store.ErrNotFound, "requeue")
}

func testOutboxListAndCounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	c, err := s.OutboxCounts(ctx)
	ok(t, err, "counts")
	want := map[string]int{store.StatusPending: 0, store.StatusSending: 0, store.StatusSent: 0, store.StatusFailed: 0}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("empty counts = %v, want %v", c, want)
	}
	var all []int64
	for i := 0; i < 6; i++ {
		m := msg(fmt.Sprintf("m%d", i))
		m.NextAttemptAt = base.Add(time.Duration(i) * time.Second)
		all = append(all, enqueue(t, s, m))
	}
	claimed, err := s.ClaimDue(ctx, base.Add(2*time.Second), time.Minute, 10) // m0 m1 m2
	ok(t, err, "claim")
	if len(claimed) != 3 {
		t.Fatalf("claimed %d, want 3", len(claimed))
	}
	ok(t, s.MarkSent(ctx, all[0], "log", "", base), "sent")
	ok(t, s.MarkFailed(ctx, all[1], "x"), "failed")

	c, err = s.OutboxCounts(ctx)
	ok(t, err, "counts")
	want = map[string]int{store.StatusPending: 3, store.StatusSending: 1, store.StatusSent: 1, store.StatusFailed: 1}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("counts = %v, want %v", c, want)
	}

	list, err := s.ListOutbox(ctx, "", 0)
	ok(t, err, "list all")
	if got, w := ids(list), []int64{all[5], all[4], all[3], all[2], all[1], all[0]}; !reflect.DeepEqual(got, w) {
		t.Fatalf("ListOutbox all = %v, want newest first %v", got, w)
	}
	list, err = s.ListOutbox(ctx, store.StatusPending, 2)
	ok(t, err, "list pending")
	if got, w := ids(list), []int64{all[5], all[4]}; !reflect.DeepEqual(got, w) {
		t.Fatalf("ListOutbox pending 2 = %v, want %v", got, w)
	}
	list, err = s.ListOutbox(ctx, store.StatusFailed, 10)
	ok(t, err, "list failed")
	if len(list) != 1 || list[0].ID != all[1] || list[0].LastError != "x" {
		t.Fatalf("ListOutbox failed = %+v", list)
	}
}

func testOutboxConcurrentClaim(t *testing.T, s store.Store) {
	const total = 200
	want := map[int64]bool{}
	for i := 0; i < total; i++ {
		m := msg(fmt.Sprintf("c%d", i))
		m.NextAttemptAt = base.Add(-time.Duration(i) * time.Millisecond)
		want[enqueue(t, s, m)] = true
	}
	workers := make([]store.Store, 8)
	for i := range workers {
		workers[i] = s
	}
	claimed := ClaimConcurrently(t, base, 7, workers...)
	for _, m := range claimed {
		if m.Attempts != 1 || m.Status != store.StatusSending {
			t.Errorf("message %d claimed with attempts %d status %q", m.ID, m.Attempts, m.Status)
		}
		if !want[m.ID] {
			t.Errorf("claimed unknown message %d", m.ID)
		}
	}
	CheckClaimedOnce(t, claimed, total)
}

// --- alerts ---

func claim(kind, id, typ string, th int, window string) store.AlertClaim {
	return store.AlertClaim{Kind: kind, ID: id, AlertType: typ, Threshold: th, Window: window}
}

func claimAlert(t *testing.T, s store.Store, c store.AlertClaim, now time.Time, ttl time.Duration) bool {
	t.Helper()
	won, err := s.ClaimAlert(t.Context(), c, now, ttl)
	ok(t, err, "claim alert")
	return won
}

func testAlertClaim(t *testing.T, s store.Store) {
	c := claim(store.KindKey, "k1", "max_budget", 80, "w1|10")
	if !claimAlert(t, s, c, base, time.Hour) {
		t.Fatal("first claim lost")
	}
	if claimAlert(t, s, c, base.Add(time.Minute), time.Hour) {
		t.Fatal("second claim of the same window won")
	}
	// Every part of the identity counts.
	for _, other := range []store.AlertClaim{
		claim(store.KindUser, "k1", "max_budget", 80, "w1|10"),
		claim(store.KindKey, "k2", "max_budget", 80, "w1|10"),
		claim(store.KindKey, "k1", "soft_budget", 80, "w1|10"),
		claim(store.KindKey, "k1", "max_budget", 100, "w1|10"),
	} {
		if !claimAlert(t, s, other, base, time.Hour) {
			t.Fatalf("claim %+v lost to a different identity", other)
		}
	}
	// ttl <= 0: a claim never expires by age.
	if claimAlert(t, s, c, base.Add(1000*time.Hour), 0) {
		t.Fatal("ttl 0 expired a claim")
	}
}

func testAlertWindowRearms(t *testing.T, s store.Store) {
	c := claim(store.KindKey, "k1", "soft_budget", 0, "2026-03-01T00:00:00Z|10")
	if !claimAlert(t, s, c, base, 0) {
		t.Fatal("first claim lost")
	}
	c2 := c
	c2.Window = "2026-04-01T00:00:00Z|10" // budget reset
	if !claimAlert(t, s, c2, base.Add(time.Second), 0) {
		t.Fatal("a new window did not re-arm the alert")
	}
	if claimAlert(t, s, c2, base.Add(2*time.Second), 0) {
		t.Fatal("new window claimed twice")
	}
	c3 := c2
	c3.Window = "2026-04-01T00:00:00Z|20" // budget raised
	if !claimAlert(t, s, c3, base.Add(3*time.Second), 0) {
		t.Fatal("a changed budget did not re-arm the alert")
	}
}

func testAlertTTL(t *testing.T, s store.Store) {
	c := claim(store.KindUser, "u1", "max_budget", 100, "w")
	ttl := time.Hour
	if !claimAlert(t, s, c, base, ttl) {
		t.Fatal("first claim lost")
	}
	if claimAlert(t, s, c, base.Add(ttl-time.Second), ttl) {
		t.Fatal("claim younger than ttl taken over")
	}
	if !claimAlert(t, s, c, base.Add(ttl+time.Second), ttl) {
		t.Fatal("claim older than ttl not taken over")
	}
	// The takeover refreshed sent_at.
	if claimAlert(t, s, c, base.Add(ttl+2*time.Second), ttl) {
		t.Fatal("takeover did not refresh the claim time")
	}
}

func testAlertRelease(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := claim(store.KindKey, "k1", "max_budget", 100, "w1")
	if !claimAlert(t, s, c, base, 0) {
		t.Fatal("first claim lost")
	}
	// Releasing another window leaves this claim alone.
	other := c
	other.Window = "w0"
	ok(t, s.ReleaseAlert(ctx, other), "release other window")
	if claimAlert(t, s, c, base, 0) {
		t.Fatal("release of another window removed the claim")
	}
	ok(t, s.ReleaseAlert(ctx, c), "release")
	if !claimAlert(t, s, c, base.Add(time.Second), 0) {
		t.Fatal("released claim could not be claimed again")
	}
	ok(t, s.ReleaseAlert(ctx, claim(store.KindKey, "none", "max_budget", 1, "w")), "release missing")
}

func testAlertList(t *testing.T, s store.Store) {
	ctx := t.Context()
	l, err := s.ListAlerts(ctx, store.KindKey, "k1")
	ok(t, err, "list empty")
	if len(l) != 0 {
		t.Fatalf("empty list = %+v", l)
	}
	claimAlert(t, s, claim(store.KindKey, "k1", "max_budget", 80, "w"), base, 0)
	claimAlert(t, s, claim(store.KindKey, "k1", "max_budget", 100, "w"), base.Add(time.Minute), 0)
	claimAlert(t, s, claim(store.KindKey, "k2", "max_budget", 80, "w"), base, 0)
	claimAlert(t, s, claim(store.KindUser, "k1", "max_budget", 80, "w"), base, 0)
	l, err = s.ListAlerts(ctx, store.KindKey, "k1")
	ok(t, err, "list")
	want := []store.AlertRecord{
		{AlertClaim: claim(store.KindKey, "k1", "max_budget", 100, "w"), SentAt: base.Add(time.Minute)},
		{AlertClaim: claim(store.KindKey, "k1", "max_budget", 80, "w"), SentAt: base},
	}
	if len(l) == 2 {
		checkUTC(t, "alert", l[0].SentAt, l[1].SentAt)
	}
	same(t, &l, &want, "ListAlerts newest first")
}

func testAlertRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 20
	run := func(c store.AlertClaim, now time.Time) int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				won, err := s.ClaimAlert(ctx, c, now, time.Hour)
				if err != nil {
					t.Errorf("concurrent ClaimAlert: %v", err)
					return
				}
				if won {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		return wins
	}
	c := claim(store.KindKey, "k1", "max_budget", 100, "w1")
	if w := run(c, base); w != 1 {
		t.Fatalf("fresh claim: %d winners of %d, want exactly 1", w, n)
	}
	c.Window = "w2"
	if w := run(c, base.Add(time.Second)); w != 1 {
		t.Fatalf("window change: %d winners of %d, want exactly 1", w, n)
	}
	if w := run(c, base.Add(2*time.Hour)); w != 1 {
		t.Fatalf("ttl expiry: %d winners of %d, want exactly 1", w, n)
	}
}

// --- invitations ---

func testInvitations(t *testing.T, s store.Store) {
	ctx := t.Context()
	inv := &store.Invitation{ID: "inv-1", UserID: "u1", CreatedAt: base, ExpiresAt: base.Add(7 * 24 * time.Hour)}
	ok(t, s.CreateInvitation(ctx, inv), "create")
	isErr(t, s.CreateInvitation(ctx, &store.Invitation{ID: "inv-1", UserID: "u2", CreatedAt: base, ExpiresAt: base}),
		store.ErrConflict, "duplicate invitation")
	got, err := s.GetInvitation(ctx, "inv-1")
	ok(t, err, "get")
	checkUTC(t, "invitation", got.CreatedAt, got.ExpiresAt)
	same(t, got, &store.Invitation{ID: "inv-1", UserID: "u1", CreatedAt: base, ExpiresAt: base.Add(7 * 24 * time.Hour)}, "invitation")

	_, err = s.GetInvitation(ctx, "nope")
	isErr(t, err, store.ErrNotFound, "get missing")
	isErr(t, s.AcceptInvitation(ctx, "nope", base), store.ErrNotFound, "accept missing")

	at := base.Add(time.Hour + time.Nanosecond)
	ok(t, s.AcceptInvitation(ctx, "inv-1", at), "accept")
	isErr(t, s.AcceptInvitation(ctx, "inv-1", at.Add(time.Minute)), store.ErrConflict, "accept twice")
	got, err = s.GetInvitation(ctx, "inv-1")
	ok(t, err, "get")
	if got.AcceptedAt == nil || !got.AcceptedAt.Equal(at) {
		t.Fatalf("AcceptedAt = %v, want %v (the first acceptance)", got.AcceptedAt, at)
	}

	// Concurrent accepts: exactly one succeeds.
	ok(t, s.CreateInvitation(ctx, &store.Invitation{ID: "inv-2", UserID: "u1", CreatedAt: base, ExpiresAt: base}), "create")
	var wg sync.WaitGroup
	var mu sync.Mutex
	okN, conflictN := 0, 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.AcceptInvitation(ctx, "inv-2", base)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				okN++
			case errors.Is(err, store.ErrConflict):
				conflictN++
			default:
				t.Errorf("concurrent accept: %v", err)
			}
		}()
	}
	wg.Wait()
	if okN != 1 || conflictN != 9 {
		t.Fatalf("concurrent accepts: %d ok, %d conflicts; want 1 and 9", okN, conflictN)
	}
}
