package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/sqlite"
)

// states holds the shared state of every live configuration, keyed by
// stateConfig. A reload provisions the new config before cleaning up the
// old one, so state whose key is unchanged is never torn down in between.
var states = caddy.NewUsagePool()

// stateConfig is what identifies one shared state: two configs that point
// at the same store share it.
type stateConfig struct {
	store string
}

// sharedState is what survives reloads.
type sharedState struct {
	key    stateConfig
	store  store.Store
	keys   *keyCache
	ledger *spend.Ledger
	sink   *sinkSwitch
	logger *zap.Logger
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
	var (
		st  store.Store
		err error
	)
	switch {
	case strings.HasPrefix(cfg.store, "postgres://"), strings.HasPrefix(cfg.store, "postgresql://"):
		return nil, errors.New("the postgres store is not available in this build yet")
	default:
		st, err = sqlite.Open(cfg.store)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	s := &sharedState{key: cfg, store: st, keys: newKeyCache(st), sink: new(sinkSwitch), logger: logger}
	if err := s.keys.load(context.Background()); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("loading keys: %w", err)
	}
	s.ledger = spend.NewLedger(spend.LedgerConfig{
		Writer: st,
		Sink:   s.sink,
		Logger: logger.Named("ledger"),
	})
	if err := loadAccounts(context.Background(), st, s.ledger); err != nil {
		_ = s.ledger.Close(context.Background())
		_ = st.Close()
		return nil, fmt.Errorf("loading spend: %w", err)
	}
	return s, nil
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
	flushErr := s.ledger.Close(ctx)
	if flushErr != nil {
		s.logger.Error("flushing spend at shutdown", zap.Error(flushErr))
	}
	return errors.Join(flushErr, s.store.Close())
}

var _ caddy.Destructor = (*sharedState)(nil)
