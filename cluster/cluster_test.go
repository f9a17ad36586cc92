package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// The tests use the real Redis at 127.0.0.1:6379 (or $LLMSPEND_TEST_REDIS,
// a redis:// URL), each under its own random prefix whose keys are
// deleted at cleanup.

func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	if u := os.Getenv("LLMSPEND_TEST_REDIS"); u != "" {
		o, err := redis.ParseURL(u)
		if err != nil {
			tb.Fatalf("LLMSPEND_TEST_REDIS: %v", err)
		}
		return o
	}
	return &redis.Options{Addr: "127.0.0.1:6379"}
}

var (
	reachOnce sync.Once
	reachErr  error
)

// newClient returns a client of the test Redis, or skips when none answers.
func newClient(tb testing.TB, name string) *redis.Client {
	tb.Helper()
	reachOnce.Do(func() {
		o := redisOptions(tb)
		o.DialTimeout = 2 * time.Second
		c := redis.NewClient(o)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		reachErr = c.Ping(ctx).Err()
	})
	if reachErr != nil {
		tb.Skipf("Redis unreachable at 127.0.0.1:6379 (start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, or set LLMSPEND_TEST_REDIS): %v", reachErr)
	}
	o := redisOptions(tb)
	o.ClientName = name
	o.PoolSize = 64
	c := redis.NewClient(o)
	tb.Cleanup(func() { c.Close() })
	return c
}

// newCounters returns Counters under a fresh prefix whose keys are deleted
// at cleanup, and the prefix's test-unique client name.
func newCounters(tb testing.TB) (*Counters, *redis.Client) {
	tb.Helper()
	prefix := "test-" + NewBatchID()[:16]
	c := newClient(tb, "llmspend-"+prefix)
	ctr, err := New(c, prefix, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { flushPrefix(tb, c, prefix) })
	return ctr, c
}

// sibling returns Counters of the same prefix on another connection pool:
// another gateway instance.
func sibling(tb testing.TB, of *Counters) *Counters {
	tb.Helper()
	c := newClient(tb, "llmspend-"+of.Prefix()+"-b")
	ctr, err := New(c, of.Prefix(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ctr
}

// flushPrefix deletes every key of prefix: cleanup, and a Redis that lost
// its data.
func flushPrefix(tb testing.TB, c *redis.Client, prefix string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	iter := c.Scan(ctx, 0, "llmspend:{"+prefix+"}:*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Errorf("scan %s: %v", prefix, err)
		return 0
	}
	for len(batch) > 0 {
		chunk := batch[:min(500, len(batch))]
		batch = batch[len(chunk):]
		if err := c.Del(ctx, chunk...).Err(); err != nil {
			tb.Errorf("del %s: %v", prefix, err)
		}
		n += len(chunk)
	}
	return n
}

func tp(t time.Time) *time.Time { return &t }

func TestNew(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, p := range []string{"a{b", "a}b", "a:b"} {
		if _, err := New(c, p, nil); err == nil {
			t.Errorf("New accepted prefix %q", p)
		}
	}
	if _, err := New(nil, "x", nil); err == nil {
		t.Error("New accepted a nil client")
	}
	ctr, err := New(c, "", nil)
	if err != nil || ctr.Prefix() != "default" {
		t.Fatalf("empty prefix: %v, %v", ctr, err)
	}
	w := time.Date(2026, 5, 1, 0, 0, 0, 999, time.UTC)
	if got := ctr.RedisKey(KeyOf(store.KindKey, "k1", &w)); got != "llmspend:{default}:spend:key:k1:1777593600" {
		t.Errorf("RedisKey = %q", got)
	}
	if got := ctr.RedisKey(KeyOf(store.KindUser, "a@b.c", nil)); got != "llmspend:{default}:spend:user:a@b.c:0" {
		t.Errorf("RedisKey = %q", got)
	}
	if ctr.Channel() != "llmspend:{default}:invalidate" {
		t.Errorf("Channel = %q", ctr.Channel())
	}
}

// TestUnreachable: every call fails fast with an error (the ledger's cue
// to fall back to local counters), none hangs or panics.
func TestUnreachable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctr, err := New(c, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := ctr.Ping(ctx); err == nil {
		t.Error("Ping succeeded")
	}
	if _, err := ctr.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "k", Amount: 1}}); err == nil {
		t.Error("Add succeeded")
	}
	if _, err := ctr.Get(ctx, []Key{{Kind: store.KindKey, ID: "k"}}); err == nil {
		t.Error("Get succeeded")
	}
	if _, err := ctr.Seed(ctx, store.KindKey, "k", nil, 1); err == nil {
		t.Error("Seed succeeded")
	}
	if _, err := ctr.Subscribe(ctx, func(string) {}, nil); err == nil {
		t.Error("Subscribe succeeded")
	}
}

// TestAddConcurrent: 50 goroutines on two instances add to the same key
// and user; the totals are exact and every returned total is a true
// running total (between this goroutine's own adds and the final sum).
func TestAddConcurrent(t *testing.T) {
	ctx := t.Context()
	a, _ := newCounters(t)
	b := sibling(t, a)
	w := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	kk, uk := KeyOf(store.KindKey, "k1", &w), KeyOf(store.KindUser, "u1", nil)
	const workers, adds = 50, 40
	var wg sync.WaitGroup
	for g := range workers {
		ctr := a
		if g%2 == 1 {
			ctr = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine money.Pico
			amt := money.Pico(1_000_003 + g) // distinct per goroutine
			for range adds {
				res, err := ctr.Add(ctx, []store.SpendDelta{
					{Kind: store.KindKey, ID: "k1", Window: &w, Amount: amt},
					{Kind: store.KindUser, ID: "u1", Amount: 2 * amt},
				})
				if err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				mine += amt
				if res.Totals[kk] < mine || res.Totals[uk] < 2*mine {
					t.Errorf("total %d / %d below this goroutine's own %d", res.Totals[kk], res.Totals[uk], mine)
					return
				}
			}
		}()
	}
	wg.Wait()
	var want money.Pico
	for g := range workers {
		want += adds * money.Pico(1_000_003+g)
	}
	got, err := b.Get(ctx, []Key{kk, uk, KeyOf(store.KindKey, "k1", nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got[kk] != want || got[uk] != 2*want {
		t.Fatalf("totals %d / %d, want %d / %d", got[kk], got[uk], want, 2*want)
	}
	if _, ok := got[KeyOf(store.KindKey, "k1", nil)]; ok || len(got) != 2 {
		t.Fatalf("Get returned a counter that does not exist: %v", got)
	}
}

func TestAddBatchSemantics(t *testing.T) {
	ctx := t.Context()
	ctr, rdb := newCounters(t)
	w1 := time.Now().Add(time.Hour).Truncate(time.Second)
	w2 := w1.Add(24 * time.Hour)
	res, err := ctr.Add(ctx, []store.SpendDelta{
		{Kind: store.KindKey, ID: "k", Window: &w1, Amount: 5},
		{Kind: store.KindKey, ID: "k", Window: tp(w1.Add(500 * time.Millisecond)), Amount: 6}, // same second: same window
		{Kind: store.KindKey, ID: "k", Window: &w2, Amount: 7},                                // next window: its own counter
		{Kind: store.KindUser, ID: "k", Amount: 8},                                            // a user with a key's ID
		{Kind: store.KindUser, ID: "zero", Amount: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Key]money.Pico{
		KeyOf(store.KindKey, "k", &w1):     11,
		KeyOf(store.KindKey, "k", &w2):     7,
		KeyOf(store.KindUser, "k", nil):    8,
		{Kind: store.KindUser, ID: "zero"}: 0,
	}
	if fmt.Sprint(res.Totals) != fmt.Sprint(want) {
		t.Fatalf("totals %v, want %v", res.Totals, want)
	}
	if len(res.Created) != 4 {
		t.Fatalf("created %v, want all four counters", res.Created)
	}
	res, err = ctr.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "k", Window: &w1, Amount: 1}})
	if err != nil || res.Totals[KeyOf(store.KindKey, "k", &w1)] != 12 || len(res.Created) != 0 {
		t.Fatalf("second add: %+v, %v", res, err)
	}
	// Windowed counters expire WindowGrace after their window; others never.
	ttl := rdb.TTL(ctx, ctr.RedisKey(KeyOf(store.KindKey, "k", &w1))).Val()
	if exp := time.Until(w1.Add(WindowGrace)); ttl < exp-time.Minute || ttl > exp+time.Minute {
		t.Fatalf("windowed counter TTL %v, want about %v", ttl, exp)
	}
	if ttl := rdb.TTL(ctx, ctr.RedisKey(KeyOf(store.KindUser, "k", nil))).Val(); ttl != -1 {
		t.Fatalf("unwindowed counter TTL %v, want none (-1)", ttl)
	}
	// A window closed longer ago than WindowGrace: the late delta is
	// dropped with its counter, as the store drops deltas of reset windows.
	old := time.Now().Add(-WindowGrace - time.Hour)
	res, err = ctr.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "k", Window: &old, Amount: 9}})
	if _, ok := res.Totals[KeyOf(store.KindKey, "k", &old)]; err != nil || ok {
		t.Fatalf("add to a long-closed window: %+v, %v", res, err)
	}
	if n := rdb.Exists(ctx, ctr.RedisKey(KeyOf(store.KindKey, "k", &old))).Val(); n != 0 {
		t.Fatal("long-closed window counter kept")
	}
	if _, err := ctr.Add(ctx, []store.SpendDelta{{Kind: "team", ID: "t", Amount: 1}}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if res, err := ctr.Add(ctx, nil); err != nil || len(res.Totals) != 0 {
		t.Fatalf("empty add: %+v, %v", res, err)
	}
}

// TestAddRetryIdempotent: the same batch ID applies once, however often
// it is sent (a reply lost after Redis applied it).
func TestAddRetryIdempotent(t *testing.T) {
	ctx := t.Context()
	ctr, _ := newCounters(t)
	k := KeyOf(store.KindKey, "k", nil)
	d := []store.SpendDelta{{Kind: store.KindKey, ID: "k", Amount: 100}}
	id := NewBatchID()
	for i := range 3 {
		res, err := ctr.AddRetry(ctx, id, d)
		if err != nil || res.Totals[k] != 100 {
			t.Fatalf("send %d: %+v, %v", i, res, err)
		}
	}
	res, err := ctr.AddRetry(ctx, NewBatchID(), d)
	if err != nil || res.Totals[k] != 200 {
		t.Fatalf("new batch: %+v, %v", res, err)
	}
	if _, err := ctr.AddRetry(ctx, "", d); err == nil {
		t.Fatal("empty batch ID accepted")
	}
}

// TestLargeTotalsExact: totals beyond 2^53 pico-USD (about 9,007 USD),
// where Lua's doubles would round, stay exact.
func TestLargeTotalsExact(t *testing.T) {
	ctx := t.Context()
	ctr, _ := newCounters(t)
	k := KeyOf(store.KindKey, "big", nil)
	base := money.Pico(1<<53 + 1)
	if ok, err := ctr.Seed(ctx, store.KindKey, "big", nil, base); err != nil || !ok {
		t.Fatalf("seed: %v %v", ok, err)
	}
	res, err := ctr.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "big", Amount: 2}})
	if err != nil || res.Totals[k] != base+2 {
		t.Fatalf("add: %v, %v; want %d", res.Totals[k], err, base+2)
	}
	// Raise compares exactly too: +1 is above, -1 is below.
	got, err := ctr.Raise(ctx, map[Key]money.Pico{k: base + 1})
	if err != nil || got[k] != base+2 {
		t.Fatalf("raise to a lower floor moved the counter: %v, %v", got[k], err)
	}
	got, err = ctr.Raise(ctx, map[Key]money.Pico{k: base + 3})
	if err != nil || got[k] != base+3 {
		t.Fatalf("raise by one: %v, %v; want %d", got[k], err, base+3)
	}
}

func TestRaise(t *testing.T) {
	ctx := t.Context()
	ctr, rdb := newCounters(t)
	w := time.Now().Add(time.Hour).Truncate(time.Second)
	a, b, m := KeyOf(store.KindKey, "a", nil), KeyOf(store.KindUser, "b", &w), KeyOf(store.KindKey, "missing", &w)
	neg := KeyOf(store.KindKey, "neg", nil)
	if _, err := ctr.Add(ctx, []store.SpendDelta{
		{Kind: store.KindKey, ID: "a", Amount: 50},
		{Kind: store.KindUser, ID: "b", Window: &w, Amount: 50},
		{Kind: store.KindKey, ID: "neg", Amount: -5},
	}); err != nil {
		t.Fatal(err)
	}
	got, err := ctr.Raise(ctx, map[Key]money.Pico{a: 40, b: 60, m: 70, neg: -7})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Key]money.Pico{a: 50, b: 60, m: 70, neg: -5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("raise = %v, want %v", got, want)
	}
	if got, _ := ctr.Raise(ctx, map[Key]money.Pico{neg: -3}); got[neg] != -3 {
		t.Fatalf("raise -5 to -3 = %v", got[neg])
	}
	// A raised windowed counter keeps its expiry.
	for _, k := range []Key{b, m} {
		if ttl := rdb.TTL(ctx, ctr.RedisKey(k)).Val(); ttl <= 0 {
			t.Fatalf("raised counter %v lost its TTL: %v", k, ttl)
		}
	}
	if _, err := ctr.Raise(ctx, map[Key]money.Pico{{Kind: "team"}: 1}); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestSeedNX(t *testing.T) {
	ctx := t.Context()
	ctr, rdb := newCounters(t)
	w := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	k := KeyOf(store.KindKey, "k", &w)
	ok, err := ctr.Seed(ctx, store.KindKey, "k", &w, 1000)
	if err != nil || !ok {
		t.Fatalf("first seed: %v, %v", ok, err)
	}
	// A second instance seeding with its (older) view changes nothing.
	ok, err = ctr.Seed(ctx, store.KindKey, "k", &w, 400)
	if err != nil || ok {
		t.Fatalf("second seed: %v, %v (must not overwrite)", ok, err)
	}
	res, err := ctr.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "k", Window: &w, Amount: 5}})
	if err != nil || res.Totals[k] != 1005 || len(res.Created) != 0 {
		t.Fatalf("add after seed: %+v, %v", res, err)
	}
	if ttl := rdb.TTL(ctx, ctr.RedisKey(k)).Val(); ttl < 48*time.Hour+WindowGrace-time.Hour {
		t.Fatalf("seeded windowed counter TTL %v", ttl)
	}
	// A window closed longer ago than WindowGrace is not seeded.
	old := time.Now().Add(-WindowGrace - time.Hour)
	if ok, err := ctr.Seed(ctx, store.KindKey, "k", &old, 1); err != nil || ok {
		t.Fatalf("seed of a long-closed window: %v, %v", ok, err)
	}
	// Seeds race: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := ctr.Seed(ctx, store.KindUser, "race", nil, money.Pico(i))
			if err != nil {
				t.Errorf("seed: %v", err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent seeds won, want 1", wins.Load())
	}
}

// TestRedisLossThenSeed simulates a Redis restart: every key of the
// prefix vanishes. Get sees nothing, Seed from the durable totals restores
// them exactly, and spend continues from there. A counter re-created by an
// Add before anyone seeded it is reported and healed by Raise.
func TestRedisLossThenSeed(t *testing.T) {
	ctx := t.Context()
	a, rdb := newCounters(t)
	b := sibling(t, a)
	w := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	durable := map[Key]money.Pico{} // what the store would hold once flushed
	var deltas []store.SpendDelta
	for i := range 10 {
		d := store.SpendDelta{Kind: store.KindKey, ID: fmt.Sprint("k", i), Window: &w, Amount: money.Pico(1000 * (i + 1))}
		u := store.SpendDelta{Kind: store.KindUser, ID: fmt.Sprint("u", i), Amount: money.Pico(7 * (i + 1))}
		deltas = append(deltas, d, u)
		durable[KeyOf(d.Kind, d.ID, d.Window)] += d.Amount
		durable[KeyOf(u.Kind, u.ID, nil)] += u.Amount
	}
	for range 3 {
		if _, err := a.Add(ctx, deltas); err != nil {
			t.Fatal(err)
		}
	}
	for k := range durable {
		durable[k] *= 3
	}
	keys := make([]Key, 0, len(durable))
	for k := range durable {
		keys = append(keys, k)
	}
	before, err := b.Get(ctx, keys)
	if err != nil || fmt.Sprint(before) != fmt.Sprint(durable) {
		t.Fatalf("before loss: %v, %v", before, err)
	}

	if n := flushPrefix(t, rdb, a.Prefix()); n < len(durable) {
		t.Fatalf("flushed %d keys, want at least %d", n, len(durable))
	}
	if got, err := b.Get(ctx, keys); err != nil || len(got) != 0 {
		t.Fatalf("after loss Get = %v, %v; want nothing", got, err)
	}

	// One counter is hit by an Add before it is seeded: Created says so.
	hit := KeyOf(store.KindKey, "k0", &w)
	res, err := b.Add(ctx, []store.SpendDelta{{Kind: store.KindKey, ID: "k0", Window: &w, Amount: 1}})
	if err != nil || len(res.Created) != 1 || res.Created[0] != hit || res.Totals[hit] != 1 {
		t.Fatalf("add after loss: %+v, %v", res, err)
	}
	// Both instances seed from the store; the second finds them present.
	for _, ctr := range []*Counters{a, b} {
		for k, v := range durable {
			var win *time.Time
			if k.Window != 0 {
				win = &w
			}
			if _, err := ctr.Seed(ctx, k.Kind, k.ID, win, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The re-created counter is healed by Raise to durable + the unflushed 1.
	if _, err := b.Raise(ctx, map[Key]money.Pico{hit: durable[hit] + 1}); err != nil {
		t.Fatal(err)
	}
	durable[hit]++
	after, err := a.Get(ctx, keys)
	if err != nil || fmt.Sprint(after) != fmt.Sprint(durable) {
		t.Fatalf("after seed:\n got  %v\n want %v (%v)", after, durable, err)
	}
	res, err = a.Add(ctx, deltas[:1])
	if err != nil || res.Totals[hit] != durable[hit]+deltas[0].Amount || len(res.Created) != 0 {
		t.Fatalf("add after restore: %+v, %v", res, err)
	}
}

// TestPubSub: an invalidation published on one instance reaches every
// subscriber well within a second; after a dropped connection the
// subscriber reports the gap and keeps receiving.
func TestPubSub(t *testing.T) {
	ctx := t.Context()
	a, rdb := newCounters(t)
	b := sibling(t, a)
	type got struct {
		who string
		id  string
		at  time.Time
	}
	recv := make(chan got, 100)
	gaps := make(chan struct{}, 10)
	var subs []*Subscription
	for _, who := range []string{"a", "b"} {
		ctr := a
		if who == "b" {
			ctr = b
		}
		s, err := ctr.Subscribe(ctx, func(id string) { recv <- got{who, id, time.Now()} },
			func() { gaps <- struct{}{} })
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	// Another installation's messages do not arrive.
	other, err := New(rdb, a.Prefix()+"-other", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, "foreign"); err != nil {
		t.Fatal(err)
	}

	expect := func(id string) {
		t.Helper()
		sent := time.Now()
		if err := a.Publish(ctx, id); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		deadline := time.After(time.Second)
		for len(seen) < 2 {
			select {
			case g := <-recv:
				if g.id != id {
					t.Fatalf("%s received %q, want %q", g.who, g.id, id)
				}
				if seen[g.who] {
					t.Fatalf("%s received %q twice", g.who, id)
				}
				seen[g.who] = true
				t.Logf("%s got %s after %v", g.who, id, g.at.Sub(sent))
			case <-deadline:
				t.Fatalf("invalidation %q reached %v within a second, want both", id, seen)
			}
		}
	}
	expect("key-1")
	expect("key-2")

	// Kill b's subscriber connection, as a Redis restart or network cut would.
	var killed int64
	for _, line := range strings.Split(rdb.ClientList(ctx).Val(), "\n") {
		f := strings.Fields(line)
		if !slices.Contains(f, "name=llmspend-"+a.Prefix()+"-b") || !slices.Contains(f, "sub=1") {
			continue
		}
		for _, kv := range f {
			if id, ok := strings.CutPrefix(kv, "id="); ok {
				if err := rdb.ClientKillByFilter(ctx, "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				fmt.Sscan(id, &killed)
			}
		}
	}
	if killed == 0 {
		t.Fatalf("no subscriber connection of b found in CLIENT LIST:\n%s", rdb.ClientList(ctx).Val())
	}
	select {
	case <-gaps:
	case <-time.After(10 * time.Second):
		t.Fatal("no gap reported after the subscriber connection was killed")
	}
	expect("key-3")

	for _, s := range subs {
		if err := s.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			t.Errorf("close: %v", err)
		}
	}
	// Closed: nothing more is delivered.
	if err := a.Publish(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-recv:
		t.Fatalf("closed subscription delivered %+v", g)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestSubscribeStopsWithContext: cancelling the context ends the
// subscription's goroutines.
func TestSubscribeStopsWithContext(t *testing.T) {
	a, _ := newCounters(t)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := a.Subscribe(ctx, func(string) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("subscription still running after its context ended")
	}
	s.Close() // after cancel: harmless
	if _, err := a.Subscribe(t.Context(), nil, nil); err == nil {
		t.Fatal("nil onKey accepted")
	}
}

// BenchmarkAddBatch is one flush of 100 deltas (50 keys, 50 users): one
// round trip.
func BenchmarkAddBatch(b *testing.B) {
	ctr, _ := newCounters(b)
	ctx := context.Background()
	w := time.Now().Add(time.Hour).Truncate(time.Second)
	var deltas []store.SpendDelta
	for i := range 50 {
		deltas = append(deltas,
			store.SpendDelta{Kind: store.KindKey, ID: fmt.Sprint("k", i), Window: &w, Amount: 1234},
			store.SpendDelta{Kind: store.KindUser, ID: fmt.Sprint("u", i), Amount: 1234})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ctr.Add(ctx, deltas); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddSingle is one request's key and user deltas sent alone: the
// cost per request without batching.
func BenchmarkAddSingle(b *testing.B) {
	ctr, _ := newCounters(b)
	ctx := context.Background()
	w := time.Now().Add(time.Hour).Truncate(time.Second)
	deltas := []store.SpendDelta{
		{Kind: store.KindKey, ID: "k", Window: &w, Amount: 1234},
		{Kind: store.KindUser, ID: "u", Amount: 1234},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ctr.Add(ctx, deltas); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddSingleParallel is BenchmarkAddSingle from many goroutines:
// throughput of unbatched adds on one client.
func BenchmarkAddSingleParallel(b *testing.B) {
	ctr, _ := newCounters(b)
	w := time.Now().Add(time.Hour).Truncate(time.Second)
	deltas := []store.SpendDelta{
		{Kind: store.KindKey, ID: "k", Window: &w, Amount: 1234},
		{Kind: store.KindUser, ID: "u", Amount: 1234},
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ctr.Add(context.Background(), deltas); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGet100(b *testing.B) {
	ctr, _ := newCounters(b)
	ctx := context.Background()
	var keys []Key
	var deltas []store.SpendDelta
	for i := range 100 {
		deltas = append(deltas, store.SpendDelta{Kind: store.KindKey, ID: fmt.Sprint("k", i), Amount: 1})
		keys = append(keys, KeyOf(store.KindKey, fmt.Sprint("k", i), nil))
	}
	if _, err := ctr.Add(ctx, deltas); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, err := ctr.Get(ctx, keys); err != nil || len(got) != 100 {
			b.Fatal(len(got), err)
		}
	}
}
