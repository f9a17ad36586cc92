package cluster_test

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/cluster"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// A sketch of the ledger side: one goroutine sends the batched deltas
// every 20 ms, keeps a failed batch (and its ID) to re-send, and learns the
// cluster-wide totals from each reply. Not run: it needs a Redis.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	ctr, err := cluster.New(rdb, "prod", zap.NewNop())
	if err != nil {
		panic(err)
	}

	// On loading an account from the store: seed its counter (no-op when
	// another instance already did).
	resetAt := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	_, _ = ctr.Seed(ctx, store.KindKey, "key-id", &resetAt, 42*money.USD/100)

	var (
		pending     []store.SpendDelta // filled by requests (under the ledger's lock)
		retryID     string             // batch ID of a failed Add, "" if none
		retryDeltas []store.SpendDelta
		shared      = map[cluster.Key]money.Pico{}
	)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if retryID != "" { // the last batch may or may not have landed
			if _, err := ctr.AddRetry(ctx, retryID, retryDeltas); err != nil {
				continue // still down: serve on local counters
			}
			retryID, retryDeltas = "", nil
			// Back: reconcile with Raise (durable + own unflushed) here.
		}
		batch := pending
		pending = nil
		id := cluster.NewBatchID()
		res, err := ctr.AddRetry(ctx, id, batch)
		if err != nil {
			retryID, retryDeltas = id, batch
			continue
		}
		for k, total := range res.Totals {
			shared[k] = total // every instance's spend in this window
		}
		// res.Created lists counters Redis lost (or nobody seeded): Raise
		// each to the durable spend + this instance's unflushed deltas.
		_ = res.Created
	}
}
