package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Publish tells every subscribed instance that key keyID changed (deleted,
// regenerated, updated): they drop it from their key caches. It returns
// once Redis has accepted the message, not when subscribers have it.
func (c *Counters) Publish(ctx context.Context, keyID string) error {
	if err := c.rdb.Publish(ctx, c.Channel(), keyID).Err(); err != nil {
		return fmt.Errorf("cluster: publish: %w", err)
	}
	return nil
}

// Subscription is a running Subscribe; Close stops it.
type Subscription struct {
	ps     *redis.PubSub
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error
}

// healthCheck is how often an idle subscription pings Redis; a dead
// connection is noticed (and replaced) within about this plus the ping
// timeout.
const healthCheck = time.Second

// Subscribe listens for invalidations until ctx ends or Close. onKey runs
// for each key ID published (by any instance, this one included), one at
// a time on the subscription's goroutine: keep it short. onGap (may be
// nil) runs after every reconnection, since messages published while the
// connection was down are lost: the gateway should then drop its whole
// key cache. Subscribe returns once Redis has confirmed the subscription,
// so a Publish after it returns is delivered.
func (c *Counters) Subscribe(ctx context.Context, onKey func(keyID string), onGap func()) (*Subscription, error) {
	if onKey == nil {
		return nil, errors.New("cluster: subscribe: nil onKey")
	}
	ps := c.rdb.Subscribe(ctx, c.Channel())
	// The first reply is the subscription confirmation (or the error).
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Subscription{ps: ps, cancel: cancel, done: make(chan struct{})}
	ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(healthCheck),
		redis.WithChannelPingTimeout(2*time.Second))
	log := c.log.With(zap.String("channel", c.Channel()))
	go func() {
		defer close(s.done)
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *redis.Message:
					onKey(m.Payload)
				case *redis.Subscription:
					// go-redis re-subscribed on a new connection.
					if m.Kind == "subscribe" {
						log.Warn("key invalidation channel reconnected; invalidations may have been missed")
						if onGap != nil {
							onGap()
						}
					}
				}
			}
		}
	}()
	go func() {
		<-ctx.Done()
		s.close()
	}()
	return s, nil
}

func (s *Subscription) close() {
	s.once.Do(func() { s.err = s.ps.Close() })
}

// Close stops the subscription and waits for its goroutine: no callback
// runs after Close returns.
func (s *Subscription) Close() error {
	s.cancel()
	s.close()
	<-s.done
	return s.err
}
