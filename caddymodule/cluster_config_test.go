package caddymodule

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

func parseApp(t testing.TB, block string) (*App, error) {
	t.Helper()
	a := new(App)
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("llm_spend {\n" + block + "\n}"))
	return a, err
}

func TestCaddyfileStoreAndRedis(t *testing.T) {
	ok := []struct {
		block  string
		store  string
		redis  string
		prefix string
		batch  time.Duration
	}{
		{"store /data/llmspend.db", "/data/llmspend.db", "", "", 0},
		{"store postgres://u:p@db/llmspend", "postgres://u:p@db/llmspend", "", "", 0},
		{"store postgres postgres://db/llmspend?search_path=a", "postgres://db/llmspend?search_path=a", "", "", 0},
		{`store postgres "host=db dbname=llmspend"`, "host=db dbname=llmspend", "", "", 0},
		{"store sqlite /x.db", "/x.db", "", "", 0},
		{"store sqlite", "", "", "", 0},
		{"store", "", "", "", 0},
		{"redis redis://127.0.0.1:6379/0", "", "redis://127.0.0.1:6379/0", "", 0},
		{"redis", "", "", "", 0},
		{"redis redis://r:6379 {\n prefix prod\n batch 50ms\n}", "", "redis://r:6379", "prod", 50 * time.Millisecond},
	}
	for _, c := range ok {
		a, err := parseApp(t, c.block)
		if err != nil {
			t.Errorf("%q: %v", c.block, err)
			continue
		}
		cfg := a.stateConfig(caddy.NewReplacer())
		if a.Store != c.store || cfg.redis != c.redis || cfg.redisPrefix != c.prefix || cfg.redisBatch != c.batch {
			t.Errorf("%q: store %q redis %q prefix %q batch %v", c.block, a.Store, cfg.redis, cfg.redisPrefix, cfg.redisBatch)
		}
	}
	bad := map[string]string{
		"store postgres":                      "needs a DSN",
		"store postgres /var/lib/x.db":        "not a PostgreSQL DSN",
		"store sqlite postgres://db/x":        "got a PostgreSQL DSN",
		"store mysql x":                       "sqlite or postgres",
		"store a b c":                         "wrong argument count",
		"redis a b":                           "wrong argument count",
		"redis r://x {\n prefix a:b\n}":       "must not contain",
		"redis r://x {\n batch 0s\n}":         "between 1ms and 10s",
		"redis r://x {\n batch fast\n}":       "between 1ms and 10s",
		"redis r://x {\n shards 3\n}":         "unrecognized redis option",
		"redis r://x {\n prefix\n}":           "wrong argument count",
		"redis r://x\nredis r://y":            "already specified",
		"store postgres://a/b\nstore /x.db":   "already specified",
		"store postgres postgres://u:secret@": "",
	}
	for block, want := range bad {
		_, err := parseApp(t, block)
		if want == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", block, err, want)
		}
	}
	// A rejected DSN is not echoed with its password.
	if _, err := parseApp(t, "store postgres mysql://u:secret@db/x"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("DSN error %v", err)
	}
}

func TestIsPostgresDSN(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://db/x":              true,
		"postgresql://db/x":            true,
		"host=db dbname=x":             true,
		"dbname=x":                     true,
		"/var/lib/llmspend.db":         false,
		"llmspend.db":                  false,
		"file:x.db?_pragma=busy":       false,
		"/data/host=odd/llmspend.db":   false,
		"C:\\data\\llmspend.db":        false,
		"":                             false,
		"user=me password=x sslmode=a": true,
	} {
		if got := isPostgresDSN(s); got != want {
			t.Errorf("isPostgresDSN(%q) = %v", s, got)
		}
	}
}

// FuzzCaddyfileStoreRedis: any llm_spend block parses or fails cleanly.
func FuzzCaddyfileStoreRedis(f *testing.F) {
	f.Add("store postgres postgres://db/x\nredis redis://r {\n prefix p\n batch 20ms\n}")
	f.Add("redis {\n}")
	f.Add("store sqlite")
	f.Fuzz(func(t *testing.T, block string) {
		a := new(App)
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("llm_spend {\n" + block + "\n}")); err != nil {
			return
		}
		cfg := a.stateConfig(caddy.NewReplacer())
		if strings.ContainsAny(cfg.redisPrefix, "{}:") {
			t.Fatalf("prefix %q accepted", cfg.redisPrefix)
		}
	})
}

// TestClusterUserChanged: two shared states in one process (two
// instances' worth of store, ledger, key cache and Redis subscription): a
// user's new budget set on one reaches the other's ledger through the
// invalidation channel.
func TestClusterUserChanged(t *testing.T) {
	dsn := pgSchema(t)
	rdb := redisClient(t)
	cfg := stateConfig{store: dsn, redis: "redis://" + testRedisAddr + "/0", redisPrefix: redisPrefix(t, rdb)}
	open := func() *sharedState {
		s, err := openSharedState(cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Destruct() })
		return s
	}
	a, b := open(), open()
	ctx := context.Background()
	u := &store.User{UserID: "ada", UserRole: "internal_user", CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
	if err := a.store.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	a.userChanged(u)
	limit := money.USD
	u.MaxBudget = &limit
	if err := a.store.UpdateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	a.userChanged(u)
	deadline := time.Now().Add(time.Second)
	for {
		if s, ok := b.ledger.Snapshot(store.KindUser, "ada"); ok && s.MaxBudget != nil && *s.MaxBudget == limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("user budget set on A not on B within a second")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterReloadKeepsSpend: an in-process gateway on SQLite. A reload
// that changes the Redis settings (another batch interval, or Redis
// turned off) builds a new shared state while the old one still holds
// unwritten spend; live spend stays exact through it (the old state's
// last flush resyncs the new ledger) and after a full restart.
func TestClusterReloadKeepsSpend(t *testing.T) {
	rdb := redisClient(t)
	for _, next := range []string{"50ms", "off"} {
		t.Run("to "+next, func(t *testing.T) {
			prefix := redisPrefix(t, rdb)
			block := func(batch string) string {
				if batch == "off" {
					return ""
				}
				return "redis redis://" + testRedisAddr + "/0 {\n\t\t\tprefix " + prefix + "\n\t\t\tbatch " + batch + "\n\t\t}"
			}
			g := newGateway(t, block("20ms"))
			key := g.newKey(nil)
			n := 0
			check := func(when string) {
				t.Helper()
				want := float64(perRequest*money.Pico(n)) / float64(money.USD)
				deadline := time.Now().Add(3 * time.Second)
				for {
					got := g.keySpend(key)
					if got == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: spend %v, want %v", when, got, want)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			for range 20 {
				if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
					t.Fatalf("chat: %d %s", r.Status, r.Body)
				}
				n++
			}
			check("before reload")
			g.extra = block(next)
			g.load()
			if c := countStates(); c != 1 {
				t.Fatalf("%d shared states after reload", c)
			}
			check("after a reload that replaced the state")
			for range 10 {
				g.chat(key, "gpt-4o-mini")
				n++
			}
			check("after more traffic")
			g.restart()
			check("after restart")
		})
	}
}
