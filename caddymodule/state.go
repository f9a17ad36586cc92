package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/cluster"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

// states holds the shared state of every live configuration, keyed by
// stateConfig. A reload provisions the new config before cleaning up the
// old one, so state whose key is unchanged is never torn down in between.
var states = caddy.NewUsagePool()

// stateConfig is what identifies one shared state: two configs that point
// at the same store (and Redis) share it.
type stateConfig struct {
	store       string // SQLite path or PostgreSQL DSN
	redis       string // redis:// URL; "" for local counters only
	redisPrefix string
	redisBatch  time.Duration
}

// sharedState is what survives reloads.
type sharedState struct {
	key    stateConfig
	store  store.Store
	keys   *keyCache
	ledger *spend.Ledger
	sink   *sinkSwitch
	logger *zap.Logger
	rdb    *redis.Client // nil without Redis
	inv    *invalidator  // nil without Redis
}

func loadSharedState(cfg stateConfig, logger *zap.Logger) (*sharedState, error) {
	v, _, err := states.LoadOrNew(cfg, func() (caddy.Destructor, error) {
		return openSharedState(cfg, logger)
	})
	if err != nil {
		return nil, err
	}
	return v.(*sharedState), nil
}

func openSharedState(cfg stateConfig, logger *zap.Logger) (*sharedState, error) {
	st, err := openStore(cfg.store)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	s := &sharedState{key: cfg, store: st, keys: newKeyCache(st), sink: new(sinkSwitch), logger: logger}
	s.keys.onLoad = s.keyLoaded
	if err := s.keys.load(context.Background()); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("loading keys: %w", err)
	}
	lc := spend.LedgerConfig{
		Writer: lastUsedWriter{st: st, now: time.Now, logger: logger},
		Sink:   s.sink,
		Logger: logger.Named("ledger"),
	}
	var ctrs *clusterCounters
	if cfg.redis != "" {
		rdb, ctr, err := openRedis(cfg, logger)
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		s.rdb = rdb
		ctrs = &clusterCounters{ctr}
		lc.Shared = sharedCounters{ctr}
		lc.Durable = durableAccounts(st)
		lc.SharedInterval = cfg.redisBatch
		logger.Info("shared spend counters", zap.String("redis", redactURL(cfg.redis)), zap.String("prefix", ctr.Prefix()))
	}
	s.ledger = spend.NewLedger(lc)
	if err := loadAccounts(context.Background(), st, s.ledger); err != nil {
		_ = s.ledger.Close(context.Background())
		s.closeRedis()
		_ = st.Close()
		return nil, fmt.Errorf("loading spend: %w", err)
	}
	if ctrs != nil {
		s.inv = startInvalidator(s, ctrs.c, logger.Named("cluster"))
	}
	registerLive(s)
	return s, nil
}

// live lists the open shared states by store, so the last flush of a
// state that a reload replaced (same store, other Redis settings) can
// bring its successor's ledger up to date.
var (
	liveMu sync.Mutex
	live   = map[string]map[*sharedState]struct{}{}
)

func registerLive(s *sharedState) {
	liveMu.Lock()
	defer liveMu.Unlock()
	if live[s.key.store] == nil {
		live[s.key.store] = map[*sharedState]struct{}{}
	}
	live[s.key.store][s] = struct{}{}
}

// unregisterLive removes s and returns the other live states on its store.
func unregisterLive(s *sharedState) []*sharedState {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live[s.key.store], s)
	var out []*sharedState
	for o := range live[s.key.store] {
		out = append(out, o)
	}
	if len(live[s.key.store]) == 0 {
		delete(live, s.key.store)
	}
	return out
}

// clusterCounters holds the Redis counters while the state is built.
type clusterCounters struct{ c *cluster.Counters }

func (s *sharedState) closeRedis() {
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
}

func releaseSharedState(_ context.Context, s *sharedState) error {
	_, err := states.Delete(s.key)
	return err
}

// Destruct runs when the last config using this state is unloaded.
// It flushes the ledger's pending spend before closing the store.
func (s *sharedState) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.inv != nil {
		s.inv.close() // no more reloads from the store
	}
	others := unregisterLive(s)
	// The ledger sends its last batch to Redis, then writes to the store.
	flushErr := s.ledger.Close(ctx)
	if flushErr != nil {
		s.logger.Error("flushing spend at shutdown", zap.Error(flushErr))
	}
	// A successor on the same store loaded its spend before this flush.
	for _, o := range others {
		if err := o.ledger.Resync(ctx, durableAccounts(o.store)); err != nil {
			s.logger.Warn("bringing the new configuration's spend up to date failed", zap.Error(err))
		}
	}
	s.closeRedis()
	return errors.Join(flushErr, s.store.Close())
}

var _ caddy.Destructor = (*sharedState)(nil)
