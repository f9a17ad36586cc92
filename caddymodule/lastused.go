package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/store"
)

// lastUsedWriter is the ledger's write-behind writer: after each batch it
// records the keys that served requests in it as used now (TouchKeys), so
// last_used_at costs the request path nothing and is at most one flush
// interval late.
type lastUsedWriter struct {
	st     store.Store
	now    func() time.Time
	logger *zap.Logger
}

func (w lastUsedWriter) ApplySpend(ctx context.Context, b store.SpendBatch) error {
	if err := w.st.ApplySpend(ctx, b); err != nil {
		return err
	}
	if len(b.Daily) == 0 {
		return nil
	}
	now := w.now()
	used := make(map[string]time.Time, len(b.Daily))
	for _, d := range b.Daily {
		used[d.KeyID] = now
	}
	// Spend is written; a failed touch only leaves last_used_at older.
	if err := w.st.TouchKeys(ctx, used); err != nil {
		w.logger.Warn("recording keys' last use", zap.Error(err))
	}
	return nil
}
