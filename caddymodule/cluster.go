package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/cluster"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/postgres"
	"github.com/llmspend/llmspend/store/sqlite"
)

// Several gateway instances (issue 7): PostgreSQL holds the durable record
// (keys, users, spend, outbox, alert claims) for all of them; Redis holds
// the shared spend counters and carries key-cache invalidations.

// RedisOptions tunes the shared counters (`redis <url> { ... }`).
type RedisOptions struct {
	// Prefix names the installation inside Redis (several may share one
	// Redis; tests use one per test). Default: "default".
	Prefix string `json:"prefix,omitempty"`
	// Batch is how often each instance sends its spend to Redis and learns
	// the others' (default 20ms). No request waits for Redis: a longer
	// interval means fewer round trips and a later view of the others'
	// spend (the overspend bound grows with it).
	Batch caddy.Duration `json:"batch,omitempty"`
}

// parseRedis parses
//
//	redis [<url>] {
//	    prefix <name>
//	    batch  <duration>
//	}
//
// An empty URL (an unset environment variable) leaves Redis off.
func (a *App) parseRedis(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) > 1 {
		return d.ArgErr()
	}
	if len(args) == 1 {
		a.Redis = args[0]
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		field := d.Val()
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		if a.RedisOptions == nil {
			a.RedisOptions = &RedisOptions{}
		}
		switch field {
		case "prefix":
			if strings.ContainsAny(v, "{}:") {
				return d.Errf("llm_spend: redis prefix %q must not contain '{', '}' or ':'", v)
			}
			a.RedisOptions.Prefix = v
		case "batch":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 || dur > 10*time.Second {
				return d.Errf("llm_spend: redis batch must be a duration between 1ms and 10s, got %q", v)
			}
			a.RedisOptions.Batch = caddy.Duration(dur)
		default:
			return d.Errf("llm_spend: unrecognized redis option '%s' (prefix, batch)", field)
		}
	}
	return nil
}

// stateConfig is the shared-state key of this configuration.
func (a *App) stateConfig(repl *caddy.Replacer) stateConfig {
	cfg := stateConfig{store: a.Store, redis: strings.TrimSpace(repl.ReplaceAll(a.Redis, ""))}
	if o := a.RedisOptions; o != nil {
		cfg.redisPrefix = o.Prefix
		cfg.redisBatch = time.Duration(o.Batch)
	}
	return cfg
}

// isPostgresDSN tells a PostgreSQL DSN (URL or key=value) from a SQLite path.
func isPostgresDSN(s string) bool {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return true
	}
	// key=value form: "host=db dbname=llmspend user=..."
	for _, f := range strings.Fields(s) {
		k, _, ok := strings.Cut(f, "=")
		if !ok {
			return false
		}
		switch k {
		case "host", "dbname", "user", "port", "hostaddr", "sslmode":
			return true
		}
	}
	return false
}

// openStore opens the store a DSN names.
func openStore(dsn string) (store.Store, error) {
	if isPostgresDSN(dsn) {
		// Migrations may wait for another instance's (advisory lock).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(dsn)
}

// redactURL hides a password in a URL for logs.
func redactURL(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "***" + u[i:]
		}
	}
	return u
}

// openRedis builds the shared counters; it does not need Redis to answer
// (an instance started while Redis is down serves on local counters).
func openRedis(cfg stateConfig, logger *zap.Logger) (*redis.Client, *cluster.Counters, error) {
	opts, err := redis.ParseURL(cfg.redis)
	if err != nil {
		return nil, nil, fmt.Errorf("redis %s: %w", redactURL(cfg.redis), err)
	}
	if opts.ClientName == "" {
		opts.ClientName = "llmspend"
	}
	// Calls are bounded by the ledger; fail fast so a dead Redis is
	// noticed within a batch or two.
	opts.DialTimeout = time.Second
	opts.ReadTimeout = time.Second
	opts.WriteTimeout = time.Second
	rdb := redis.NewClient(opts)
	ctr, err := cluster.New(rdb, cfg.redisPrefix, logger.Named("cluster"))
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return rdb, ctr, nil
}

// sharedCounters adapts cluster.Counters to the ledger's interface.
type sharedCounters struct{ c *cluster.Counters }

var _ spend.SharedCounters = sharedCounters{}

func (s sharedCounters) NewBatchID() string { return cluster.NewBatchID() }

func (s sharedCounters) AddRetry(ctx context.Context, id string, ds []store.SpendDelta) (spend.SharedAddResult, error) {
	r, err := s.c.AddRetry(ctx, id, ds)
	if err != nil {
		return spend.SharedAddResult{}, err
	}
	out := spend.SharedAddResult{Totals: make(map[spend.SharedKey]money.Pico, len(r.Totals))}
	for k, v := range r.Totals {
		out.Totals[spend.SharedKey(k)] = v
	}
	for _, k := range r.Created {
		out.Created = append(out.Created, spend.SharedKey(k))
	}
	return out, nil
}

func (s sharedCounters) Get(ctx context.Context, keys []spend.SharedKey) (map[spend.SharedKey]money.Pico, error) {
	ks := make([]cluster.Key, len(keys))
	for i, k := range keys {
		ks[i] = cluster.Key(k)
	}
	r, err := s.c.Get(ctx, ks)
	if err != nil {
		return nil, err
	}
	out := make(map[spend.SharedKey]money.Pico, len(r))
	for k, v := range r {
		out[spend.SharedKey(k)] = v
	}
	return out, nil
}

func (s sharedCounters) Raise(ctx context.Context, floors map[spend.SharedKey]money.Pico) (map[spend.SharedKey]money.Pico, error) {
	in := make(map[cluster.Key]money.Pico, len(floors))
	for k, v := range floors {
		in[cluster.Key(k)] = v
	}
	r, err := s.c.Raise(ctx, in)
	if err != nil {
		return nil, err
	}
	out := make(map[spend.SharedKey]money.Pico, len(r))
	for k, v := range r {
		out[spend.SharedKey(k)] = v
	}
	return out, nil
}

func (s sharedCounters) Ping(ctx context.Context) error { return s.c.Ping(ctx) }

// durableAccounts reads every key and user for the ledger's reconcile.
func durableAccounts(st store.Store) spend.DurableReader {
	return func(ctx context.Context) ([]spend.Account, error) {
		keys, err := st.ListKeys(ctx, "")
		if err != nil {
			return nil, err
		}
		users, err := st.ListUsers(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]spend.Account, 0, len(keys)+len(users))
		for i := range keys {
			out = append(out, accountOfKey(&keys[i]))
		}
		for i := range users {
			out = append(out, accountOfUser(&users[i]))
		}
		return out, nil
	}
}

// invalidator keeps this instance's key cache in step with the others:
// it publishes the IDs of keys changed here and applies those changed
// anywhere (this instance included: harmless, the store is re-read).
type invalidator struct {
	s      *sharedState
	ctr    *cluster.Counters
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	sub *cluster.Subscription
}

func startInvalidator(s *sharedState, ctr *cluster.Counters, logger *zap.Logger) *invalidator {
	ctx, cancel := context.WithCancel(context.Background())
	inv := &invalidator{s: s, ctr: ctr, log: logger, ctx: ctx, cancel: cancel}
	s.keys.publish = inv.publish
	// Subscribe now when Redis answers, so a change published right after
	// start is seen; otherwise keep trying in the background.
	if err := inv.subscribe(); err != nil {
		logger.Warn("key invalidation channel unavailable; retrying", zap.Error(err))
		inv.wg.Add(1)
		go inv.retry()
	}
	return inv
}

func (inv *invalidator) subscribe() error {
	// The subscription lives as long as inv.ctx; the client's read
	// timeout bounds the wait for the confirmation.
	sub, err := inv.ctr.Subscribe(inv.ctx, inv.onKey, inv.onGap)
	if err != nil {
		return err
	}
	inv.mu.Lock()
	inv.sub = sub
	inv.mu.Unlock()
	return nil
}

// retry subscribes once Redis answers, then reloads the whole cache: any
// change made meanwhile was not announced to this instance.
func (inv *invalidator) retry() {
	defer inv.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-inv.ctx.Done():
			return
		case <-t.C:
			if err := inv.subscribe(); err == nil {
				inv.onGap()
				return
			}
		}
	}
}

// publish announces a key change; it runs after the store has committed
// it, in the background so an admin call never waits for Redis (if the
// message is lost, the subscribers' connections were down too and they
// reload everything when they reconnect).
func (inv *invalidator) publish(id string) {
	inv.wg.Add(1)
	go func() {
		defer inv.wg.Done()
		ctx, cancel := context.WithTimeout(inv.ctx, 2*time.Second)
		defer cancel()
		if err := inv.ctr.Publish(ctx, id); err != nil && inv.ctx.Err() == nil {
			inv.log.Warn("publishing key invalidation failed", zap.String("key_id", id), zap.Error(err))
		}
	}()
}

// userPrefix marks a user ID on the invalidation channel (key IDs are hex).
const userPrefix = "user:"

// userChanged brings a user changed here (budget, deletion) to every
// instance's ledger. Admin routes that change users call it after the
// store has committed.
func (s *sharedState) userChanged(u *store.User) {
	s.ledger.Upsert(accountOfUser(u))
	if s.inv != nil {
		s.inv.publish(userPrefix + u.UserID)
	}
}

// onKey reloads one key (or, with userPrefix, one user) from the store
// into the cache and the ledger.
func (inv *invalidator) onKey(id string) {
	ctx, cancel := context.WithTimeout(inv.ctx, 5*time.Second)
	defer cancel()
	if uid, ok := strings.CutPrefix(id, userPrefix); ok {
		u, err := inv.s.store.GetUser(ctx, uid)
		switch {
		case errors.Is(err, store.ErrNotFound):
			inv.s.ledger.Remove(store.KindUser, uid)
		case err != nil:
			inv.log.Warn("reloading invalidated user failed", zap.String("user_id", uid), zap.Error(err))
		default:
			inv.s.ledger.Upsert(accountOfUser(u))
		}
		return
	}
	k, err := inv.s.store.GetKey(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		inv.s.keys.removeLocal(id)
		inv.s.ledger.Remove(store.KindKey, id)
	case err != nil:
		// Cannot tell what changed: drop it, the next request re-reads it.
		inv.log.Warn("reloading invalidated key failed; dropped from the cache", zap.String("key_id", id), zap.Error(err))
		inv.s.keys.removeLocal(id)
	default:
		inv.s.keys.putLocal(*k)
		inv.s.keyLoaded(ctx, k)
	}
}

// onGap reloads every key: invalidations may have been missed.
func (inv *invalidator) onGap() {
	ctx, cancel := context.WithTimeout(inv.ctx, 30*time.Second)
	defer cancel()
	if err := inv.s.reloadKeys(ctx); err != nil {
		inv.log.Error("reloading the key cache after a gap failed; clearing it", zap.Error(err))
		inv.s.keys.clear()
	}
}

func (inv *invalidator) close() {
	inv.cancel()
	inv.mu.Lock()
	sub := inv.sub
	inv.mu.Unlock()
	if sub != nil {
		_ = sub.Close()
	}
	inv.wg.Wait()
}

// keyLoaded brings the ledger up to date with a key read from the store by
// this instance (a cache miss, an invalidation): its budget, and its
// user's if the ledger never loaded that user (a user created on another
// instance).
func (s *sharedState) keyLoaded(ctx context.Context, k *store.Key) {
	s.ledger.Upsert(accountOfKey(k))
	if k.UserID == "" || s.ledger.Seeded(store.KindUser, k.UserID) {
		return
	}
	u, err := s.store.GetUser(ctx, k.UserID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.logger.Warn("loading the user of a key failed", zap.String("user_id", k.UserID), zap.Error(err))
		}
		return
	}
	s.ledger.Upsert(accountOfUser(u))
}

// reloadKeys replaces the key cache with the store's keys and refreshes
// the ledger's budgets.
func (s *sharedState) reloadKeys(ctx context.Context) error {
	keys, err := s.store.ListKeys(ctx, "")
	if err != nil {
		return err
	}
	s.keys.replace(keys)
	for i := range keys {
		s.ledger.Upsert(accountOfKey(&keys[i]))
	}
	users, err := s.store.ListUsers(ctx)
	if err != nil {
		return err
	}
	for i := range users {
		s.ledger.Upsert(accountOfUser(&users[i]))
	}
	return nil
}

// parseStore parses
//
//	store [<sqlite path> | <postgres dsn>]
//	store sqlite   <path>
//	store postgres <dsn>
//
// With no argument (an unset environment variable) the default SQLite
// file is used; `store postgres` with an empty DSN is an error, since the
// operator asked for PostgreSQL.
func (a *App) parseStore(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
		return nil
	case 1:
		switch args[0] {
		case "postgres", "postgresql":
			return d.Errf("llm_spend: store postgres needs a DSN (is DATABASE_URL set?)")
		case "sqlite":
			return nil // default path
		}
		a.Store = args[0]
		return nil
	case 2:
		switch args[0] {
		case "postgres", "postgresql":
			if !isPostgresDSN(args[1]) && !strings.Contains(args[1], "{") {
				return d.Errf("llm_spend: store postgres: %q is not a PostgreSQL DSN (postgres://... or host=... dbname=...)", redactURL(args[1]))
			}
		case "sqlite":
			if isPostgresDSN(args[1]) {
				return d.Errf("llm_spend: store sqlite: got a PostgreSQL DSN")
			}
		default:
			return d.Errf("llm_spend: store type must be sqlite or postgres, got %q", args[0])
		}
		a.Store = args[1]
		return nil
	}
	return d.ArgErr()
}
