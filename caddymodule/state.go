package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

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
	s := &sharedState{key: cfg, store: st, keys: newKeyCache(st), logger: logger}
	if err := s.keys.load(context.Background()); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("loading keys: %w", err)
	}
	return s, nil
}

func releaseSharedState(_ context.Context, s *sharedState) error {
	_, err := states.Delete(s.key)
	return err
}

// Destruct runs when the last config using this state is unloaded.
func (s *sharedState) Destruct() error {
	return s.store.Close()
}

var _ caddy.Destructor = (*sharedState)(nil)
