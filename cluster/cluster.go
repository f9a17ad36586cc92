// Package cluster shares spend counters and key-cache invalidations
// between llmspend gateway instances through Redis (go-redis v9). It knows
// nothing of Caddy or of the ledger: the ledger drives it.
//
// # What Redis holds
//
// One integer counter per entity and budget window, in pico-USD:
//
//	llmspend:{<prefix>}:spend:<kind>:<id>:<window>
//
// kind is store.KindKey or store.KindUser, id the key ID (stable across
// regenerations) or user ID, window the entity's budget_reset_at in unix
// seconds, or 0 when it has no budget_duration. A reset therefore never
// touches a counter: the next window is simply another key, and deltas
// that arrive late for a closed window land in the closed window's
// counter, where nobody reads them, exactly as store.SpendDelta's window
// rule drops them from the durable record. Windowed counters expire
// WindowGrace after their window closes.
//
// The braces are literal: a Redis Cluster hash tag, so every key of one
// prefix lives in one slot and a whole batch stays one atomic script call
// on one node. Counters are a few bytes each; sharding them buys nothing.
//
// Invalidations travel on the pub/sub channel llmspend:{<prefix>}:invalidate.
//
// # Durable record versus shared view
//
// Redis is a view, never the record. Every instance keeps writing its own
// deltas to the store (store.Spend.ApplySpend) exactly as without Redis,
// so the durable spend is exact whatever happens to Redis. The counters
// only let each instance see the others' spend within one batch interval
// instead of never.
//
// # How the ledger should use it
//
//  1. Batch. Collect every request's cost into per-entity deltas in memory
//     and call AddRetry every N ms (say 10 to 50) from one goroutine: one
//     round trip per batch, none on the request path. It returns the new
//     shared totals of every counter in the batch; set each account's
//     shared spend to that total (it includes other instances' spend).
//     Accounts this instance has not charged in a while are refreshed with
//     Get (also one round trip for any number of keys), e.g. on each tick
//     for the accounts that are close to a budget.
//  2. Check budgets against shared total + this instance's deltas not yet
//     sent + its reservations in flight.
//  3. Seed on load. When the ledger loads an account from the store, call
//     Seed with the stored spend: it only writes when Redis has no counter
//     (first instance to use it, or Redis lost its data), so concurrent
//     loads are harmless. AddRetry reports counters it had to create from
//     zero (Created: a first use nobody seeded, a new budget window, or a
//     Redis that lost its data); Raise them at once to the stored spend
//     plus this instance's unflushed deltas.
//  4. Fall back. Send each batch with AddRetry under an ID from
//     NewBatchID, and keep ID and deltas together until a call succeeds:
//     a batch whose call failed may or may not have been applied, and
//     re-sending it under the same ID applies it at most once, whereas
//     merging it into the next batch could count it twice. While Redis
//     errors, keep serving on local counters (last shared total + local
//     deltas), log once, and keep retrying the held batch on each tick
//     (or poll Ping); when it succeeds, reconcile.
//  5. Reconcile on reconnect and every minute or so: for each account
//     held, Raise its counter to (durable spend read from the store now +
//     this instance's deltas not yet in the store). Raise only ever moves
//     a counter up, and every instance's floor is at most the true total, so
//     concurrent reconciles cannot overshoot; once traffic pauses and all
//     instances have flushed, the store holds the true total and a Raise
//     makes the counter exact.
//
// Overspend bound. With Redis up, an instance sees the others' spend one
// batch interval late, so a budget can be overshot by about one interval
// of the other instances' spend on that entity. While Redis is
// unavailable each instance enforces budgets on the last shared total it
// saw plus its own spend, so each may spend what was left of the budget
// when Redis went away: the overshoot is at most (instances - 1) times
// that remainder. After Redis loses its data, counters are rebuilt from
// the store, which lags by the write-behind buffers: until the next
// reconcile they may read low by up to one flush interval of cluster
// spend per entity.
//
// # Batches are idempotent
//
// Each Add is one Lua script call carrying a random batch ID; the script
// records the ID (for BatchIDTTL) and applies a batch whose ID it has
// already seen only once, returning current totals the second time. So a
// network error after Redis applied the batch, retried by go-redis or by
// the caller with AddRetry, never counts the spend twice. Totals are read
// as strings inside the script: Lua numbers are doubles and would round
// totals above 2^53 pico-USD (about 9,007 USD).
//
// # Invalidation
//
// Publish announces that a key changed (deleted, regenerated, updated,
// blocked); Subscribe delivers it to every instance, normally within a few
// milliseconds. Pub/sub is fire-and-forget: messages published while a
// subscriber is disconnected are lost, so Subscribe also calls onGap after
// each reconnection, and the gateway must then drop its whole key cache
// (or reload it). The subscription pings Redis every second when idle and
// go-redis reconnects by itself.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

const (
	// WindowGrace is how long a windowed counter outlives its window: late
	// deltas and slow clocks still find it, and Redis frees it afterwards.
	WindowGrace = 7 * 24 * time.Hour
	// BatchIDTTL is how long Redis remembers an applied batch ID: a retry
	// later than this would be applied again.
	BatchIDTTL = 10 * time.Minute
)

// Key identifies one shared counter: an entity in one budget window.
type Key struct {
	Kind   string // store.KindKey or store.KindUser
	ID     string
	Window int64 // budget_reset_at in unix seconds; 0 when the entity has none
}

// KeyOf returns the counter key of an entity and its budget window (nil:
// no window). Windows are compared by whole seconds: two budget windows of
// one entity are at least a budget_duration apart.
func KeyOf(kind, id string, window *time.Time) Key {
	return Key{Kind: kind, ID: id, Window: windowSeconds(window)}
}

func windowSeconds(w *time.Time) int64 {
	if w == nil {
		return 0
	}
	return w.Unix()
}

// Counters is the shared-spend client of one installation (one prefix).
// It is safe for concurrent use.
type Counters struct {
	rdb    redis.UniversalClient
	prefix string
	log    *zap.Logger
	now    func() time.Time
}

// New returns Counters for the installation named prefix (several
// installations may share a Redis; "" means "default"). client is usually
// a *redis.Client; a ClusterClient works too since all keys share one hash
// tag. logger may be nil. New does not contact Redis: call Ping.
func New(client redis.UniversalClient, prefix string, logger *zap.Logger) (*Counters, error) {
	if client == nil {
		return nil, errors.New("cluster: nil Redis client")
	}
	if prefix == "" {
		prefix = "default"
	}
	// Braces would break the hash tag, and a colon would make prefixes
	// ambiguous ("a:spend" against "a").
	if strings.ContainsAny(prefix, "{}:") {
		return nil, fmt.Errorf("cluster: prefix %q must not contain '{', '}' or ':'", prefix)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Counters{rdb: client, prefix: prefix, log: logger, now: time.Now}, nil
}

// Prefix returns the installation prefix.
func (c *Counters) Prefix() string { return c.prefix }

// RedisKey returns the Redis key of a counter (for operators and tests).
func (c *Counters) RedisKey(k Key) string {
	return "llmspend:{" + c.prefix + "}:spend:" + k.Kind + ":" + k.ID + ":" + strconv.FormatInt(k.Window, 10)
}

// Channel returns the pub/sub channel of key invalidations.
func (c *Counters) Channel() string { return "llmspend:{" + c.prefix + "}:invalidate" }

func (c *Counters) batchKey(id string) string { return "llmspend:{" + c.prefix + "}:batch:" + id }

// expireAt is the unix time a counter may expire, as a script argument;
// "0" for counters without a window.
func expireAt(k Key) string {
	if k.Window == 0 {
		return "0"
	}
	return strconv.FormatInt(k.Window+int64(WindowGrace/time.Second), 10)
}

// Ping checks that Redis answers.
func (c *Counters) Ping(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("cluster: ping: %w", err)
	}
	return nil
}

// addScript applies one batch once.
//
//	KEYS[1]      batch-ID key
//	KEYS[2..n+1] counters
//	ARGV[1]      batch-ID TTL in seconds
//	ARGV[2..n+1] amounts (decimal pico-USD)
//	ARGV[n+2..]  EXPIREAT per counter, "0" for none
//
// It returns {totals, created}: totals[i] is the counter's decimal value
// after the batch (false if it expired at once: a long-closed window),
// created[i] is 1 when this call created the counter from zero.
var addScript = redis.NewScript(`
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
local n = #KEYS - 1
local totals, created = {}, {}
for i = 1, n do
	local k = KEYS[i + 1]
	created[i] = 0
	if fresh then
		if redis.call('EXISTS', k) == 0 then created[i] = 1 end
		redis.call('INCRBY', k, ARGV[i + 1])
		local exp = ARGV[n + 1 + i]
		if exp ~= '0' then redis.call('EXPIREAT', k, exp) end
	end
	totals[i] = redis.call('GET', k)
end
return {totals, created}
`)

// AddResult is what a batch did to the shared counters.
type AddResult struct {
	// Totals are the new shared totals (every instance's spend) of the
	// counters the batch touched.
	Totals map[Key]money.Pico
	// Created lists counters Redis did not have: their total is only what
	// this batch added. Raise them to the durable spend (see the package
	// comment): Redis lost them, or no instance seeded them.
	Created []Key
}

// NewBatchID returns a random batch ID for AddRetry.
func NewBatchID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Add adds deltas to the shared counters in one round trip (one script
// call) and returns the new totals. Deltas of the same counter are summed
// first; a zero sum still reads the total. Add picks a fresh batch ID, so
// after an error the caller cannot tell whether the batch landed: the
// ledger should use AddRetry, which it can safely repeat.
func (c *Counters) Add(ctx context.Context, deltas []store.SpendDelta) (AddResult, error) {
	return c.AddRetry(ctx, NewBatchID(), deltas)
}

// AddRetry is Add with a caller-chosen batch ID: calling it again with the
// same ID and deltas within BatchIDTTL applies them at most once.
func (c *Counters) AddRetry(ctx context.Context, batchID string, deltas []store.SpendDelta) (AddResult, error) {
	if len(deltas) == 0 {
		return AddResult{Totals: map[Key]money.Pico{}}, nil
	}
	if batchID == "" {
		return AddResult{}, errors.New("cluster: empty batch ID")
	}
	sums := make(map[Key]money.Pico, len(deltas))
	var order []Key
	for _, d := range deltas {
		if d.Kind != store.KindKey && d.Kind != store.KindUser {
			return AddResult{}, fmt.Errorf("cluster: add: unknown kind %q", d.Kind)
		}
		k := KeyOf(d.Kind, d.ID, d.Window)
		if _, ok := sums[k]; !ok {
			order = append(order, k)
		}
		sums[k] += d.Amount
	}
	n := len(order)
	keys := make([]string, 0, n+1)
	args := make([]any, 0, 2*n+1)
	keys = append(keys, c.batchKey(batchID))
	args = append(args, int64(BatchIDTTL/time.Second))
	for _, k := range order {
		keys = append(keys, c.RedisKey(k))
		args = append(args, strconv.FormatInt(int64(sums[k]), 10))
	}
	for _, k := range order {
		args = append(args, expireAt(k))
	}
	res, err := addScript.Run(ctx, c.rdb, keys, args...).Result()
	if err != nil {
		return AddResult{}, fmt.Errorf("cluster: add: %w", err)
	}
	totals, created, err := parseAddReply(res, n)
	if err != nil {
		return AddResult{}, fmt.Errorf("cluster: add: %w", err)
	}
	out := AddResult{Totals: make(map[Key]money.Pico, n)}
	for i, k := range order {
		if totals[i] != nil {
			out.Totals[k] = *totals[i]
		}
		if created[i] {
			out.Created = append(out.Created, k)
		}
	}
	return out, nil
}

func parseAddReply(res any, n int) ([]*money.Pico, []bool, error) {
	pair, ok := res.([]any)
	if !ok || len(pair) != 2 {
		return nil, nil, fmt.Errorf("unexpected reply %T", res)
	}
	tl, ok1 := pair[0].([]any)
	cl, ok2 := pair[1].([]any)
	if !ok1 || !ok2 || len(tl) != n || len(cl) != n {
		return nil, nil, fmt.Errorf("unexpected reply shape for %d counters", n)
	}
	totals := make([]*money.Pico, n)
	created := make([]bool, n)
	for i := range n {
		if tl[i] != nil {
			p, err := parsePico(tl[i])
			if err != nil {
				return nil, nil, err
			}
			totals[i] = &p
		}
		v, _ := cl[i].(int64)
		created[i] = v == 1
	}
	return totals, created, nil
}

func parsePico(v any) (money.Pico, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("counter value of type %T", v)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter value %q: %w", s, err)
	}
	return money.Pico(n), nil
}

// Get reads counters in one round trip. Counters Redis does not have are
// absent from the result.
func (c *Counters) Get(ctx context.Context, keys []Key) (map[Key]money.Pico, error) {
	out := make(map[Key]money.Pico, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rk := make([]string, len(keys))
	for i, k := range keys {
		rk[i] = c.RedisKey(k)
	}
	vals, err := c.rdb.MGet(ctx, rk...).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: get: %w", err)
	}
	for i, v := range vals {
		if v == nil {
			continue
		}
		p, err := parsePico(v)
		if err != nil {
			return nil, fmt.Errorf("cluster: get %s: %w", rk[i], err)
		}
		out[keys[i]] = p
	}
	return out, nil
}

// Seed sets a counter to total only if Redis does not have it (SET NX),
// and reports whether it did. Call it with the durable spend when an
// account is loaded: the first instance, or the first after Redis lost its
// data, rebuilds the counter; every later call changes nothing.
func (c *Counters) Seed(ctx context.Context, kind, id string, window *time.Time, total money.Pico) (bool, error) {
	k := KeyOf(kind, id, window)
	a := redis.SetArgs{Mode: "NX"}
	if k.Window != 0 {
		a.ExpireAt = time.Unix(k.Window, 0).Add(WindowGrace)
		if !a.ExpireAt.After(c.now()) {
			return false, nil // long closed: nobody reads it
		}
	}
	err := c.rdb.SetArgs(ctx, c.RedisKey(k), int64(total), a).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: seed %s: %w", c.RedisKey(k), err)
	}
	return true, nil
}

// raiseScript sets each counter to max(counter, floor), comparing decimal
// strings so values above 2^53 stay exact.
//
//	KEYS[i]       counters
//	ARGV[i]       floors
//	ARGV[n+i]     EXPIREAT, "0" for none
var raiseScript = redis.NewScript(`
local function less(a, b)
	local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
	if na ~= nb then return na end
	local x, y = a, b
	if na then x, y = b:sub(2), a:sub(2) end
	if #x ~= #y then return #x < #y end
	return x < y
end
local n = #KEYS
local out = {}
for i = 1, n do
	local k = KEYS[i]
	local v = redis.call('GET', k)
	if (not v) or less(v, ARGV[i]) then
		redis.call('SET', k, ARGV[i])
		local exp = ARGV[n + i]
		if exp ~= '0' then redis.call('EXPIREAT', k, exp) end
	end
	out[i] = redis.call('GET', k)
end
return out
`)

// Raise moves each counter up to its floor if it is below (or missing),
// never down, in one round trip, and returns the resulting values. It is
// the reconcile step: floors are the durable spend plus this instance's
// unflushed deltas, always at most the true total, so Raise can only
// correct an undercount.
func (c *Counters) Raise(ctx context.Context, floors map[Key]money.Pico) (map[Key]money.Pico, error) {
	out := make(map[Key]money.Pico, len(floors))
	if len(floors) == 0 {
		return out, nil
	}
	order := make([]Key, 0, len(floors))
	for k := range floors {
		if k.Kind != store.KindKey && k.Kind != store.KindUser {
			return nil, fmt.Errorf("cluster: raise: unknown kind %q", k.Kind)
		}
		order = append(order, k)
	}
	keys := make([]string, len(order))
	args := make([]any, 0, 2*len(order))
	for i, k := range order {
		keys[i] = c.RedisKey(k)
		args = append(args, strconv.FormatInt(int64(floors[k]), 10))
	}
	for _, k := range order {
		args = append(args, expireAt(k))
	}
	res, err := raiseScript.Run(ctx, c.rdb, keys, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: raise: %w", err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != len(order) {
		return nil, fmt.Errorf("cluster: raise: unexpected reply %T", res)
	}
	for i, v := range vals {
		if v == nil {
			continue
		}
		p, err := parsePico(v)
		if err != nil {
			return nil, fmt.Errorf("cluster: raise: %w", err)
		}
		out[order[i]] = p
	}
	return out, nil
}
