package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/llmspend/llmspend/store"
)

// hashKey returns the SHA-256 of a plain key: what the store keeps (as hex)
// and what the cache is indexed by (as an array, so look-ups don't allocate).
func hashKey(plain string) [32]byte { return sha256.Sum256([]byte(plain)) }

func tokenHex(sum [32]byte) string { return hex.EncodeToString(sum[:]) }

// parseToken accepts the hex token form of a key (64 hex chars).
func parseToken(s string) ([32]byte, bool) {
	var sum [32]byte
	if len(s) != 64 {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(s)); err != nil {
		return sum, false
	}
	return sum, true
}

// cachedKey is an immutable snapshot of a key for the hot path; an update
// replaces the whole snapshot.
type cachedKey struct {
	key     store.Key
	models  map[string]struct{} // nil means all models
	expires int64               // unix nanos, 0 = never
}

func newCachedKey(k store.Key) *cachedKey {
	ck := &cachedKey{key: k}
	if len(k.Models) > 0 {
		ck.models = make(map[string]struct{}, len(k.Models))
		for _, m := range k.Models {
			ck.models[m] = struct{}{}
		}
	}
	if k.Expires != nil {
		ck.expires = k.Expires.UnixNano()
	}
	return ck
}

// allows reports whether the key may call model.
func (ck *cachedKey) allows(model string) bool {
	if ck.models == nil {
		return true
	}
	_, ok := ck.models[model]
	return ok
}

// negativeTTL bounds how long an unknown key is remembered as unknown, so
// that a stream of bad keys doesn't hit the store while a key created on
// another instance still becomes usable quickly.
const negativeTTL = time.Second

// keyCache holds every known key by hash. The store is only consulted on a
// miss (a key created by another instance, or a bad key), and misses are
// remembered briefly.
type keyCache struct {
	st store.Keys
	// publish, when set, announces a key changed here to the other
	// instances (after the store committed it). Set before use.
	publish func(id string)
	// onLoad, when set, runs for a key read from the store on a miss
	// (created on another instance): the ledger learns its budget.
	onLoad func(ctx context.Context, k *store.Key)

	mu      sync.RWMutex
	byToken map[[32]byte]*cachedKey
	byID    map[string][32]byte
	misses  map[[32]byte]int64 // unix nanos of expiry
}

func newKeyCache(st store.Keys) *keyCache {
	return &keyCache{
		st:      st,
		byToken: make(map[[32]byte]*cachedKey),
		byID:    make(map[string][32]byte),
		misses:  make(map[[32]byte]int64),
	}
}

// load fills the cache with every key in the store.
func (c *keyCache) load(ctx context.Context) error {
	keys, err := c.st.ListKeys(ctx, "")
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.putLocked(k)
	}
	return nil
}

func (c *keyCache) putLocked(k store.Key) {
	sum, ok := parseToken(k.Token)
	if !ok {
		return
	}
	if old, ok := c.byID[k.ID]; ok && old != sum {
		delete(c.byToken, old)
	}
	c.byToken[sum] = newCachedKey(k)
	c.byID[k.ID] = sum
	delete(c.misses, sum)
}

// put adds or replaces a key changed here (create, update, regenerate)
// and announces it to the other instances. A regenerate replaces the old
// token atomically: the old one stops resolving.
func (c *keyCache) put(k store.Key) {
	c.putLocal(k)
	if c.publish != nil {
		c.publish(k.ID)
	}
}

// putLocal adds or replaces a key in this instance's cache only.
func (c *keyCache) putLocal(k store.Key) {
	c.mu.Lock()
	c.putLocked(k)
	c.mu.Unlock()
}

// remove drops a key deleted here and announces it.
func (c *keyCache) remove(id string) {
	c.removeLocal(id)
	if c.publish != nil {
		c.publish(id)
	}
}

// removeLocal drops a key from this instance's cache only (an
// invalidation from another instance).
func (c *keyCache) removeLocal(id string) {
	c.mu.Lock()
	if sum, ok := c.byID[id]; ok {
		delete(c.byToken, sum)
		delete(c.byID, id)
	}
	c.mu.Unlock()
}

// replace swaps the whole cache for keys (after missed invalidations):
// keys deleted meanwhile stop resolving.
func (c *keyCache) replace(keys []store.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byToken = make(map[[32]byte]*cachedKey, len(keys))
	c.byID = make(map[string][32]byte, len(keys))
	clear(c.misses)
	for _, k := range keys {
		c.putLocked(k)
	}
}

// clear empties the cache: every key is read from the store again.
func (c *keyCache) clear() { c.replace(nil) }

// get returns the key for a hash, from memory when possible.
func (c *keyCache) get(ctx context.Context, sum [32]byte, now time.Time) (*cachedKey, error) {
	c.mu.RLock()
	ck := c.byToken[sum]
	missUntil, missed := c.misses[sum]
	c.mu.RUnlock()
	if ck != nil {
		return ck, nil
	}
	if missed && now.UnixNano() < missUntil {
		return nil, store.ErrNotFound
	}
	k, err := c.st.GetKeyByToken(ctx, tokenHex(sum))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			c.mu.Lock()
			if len(c.misses) > 100_000 { // bound memory under a flood of bad keys
				clear(c.misses)
			}
			c.misses[sum] = now.Add(negativeTTL).UnixNano()
			c.mu.Unlock()
		}
		return nil, err
	}
	c.putLocal(*k)
	if c.onLoad != nil {
		c.onLoad(ctx, k)
	}
	c.mu.RLock()
	ck = c.byToken[sum]
	c.mu.RUnlock()
	if ck == nil { // replaced meanwhile by a reload that no longer has it
		return nil, store.ErrNotFound
	}
	return ck, nil
}

// byKeyID returns the cached snapshot of a key by its stable ID.
func (c *keyCache) byKeyID(id string) *cachedKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if sum, ok := c.byID[id]; ok {
		return c.byToken[sum]
	}
	return nil
}
