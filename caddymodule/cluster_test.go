package caddymodule

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/llmspend/llmspend/cluster"
	"github.com/llmspend/llmspend/fakeupstream"
	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/postgres"
)

// Multi-instance tests: two Caddy processes (Caddy is a process singleton)
// built from ./cmd/caddy, on the machine's PostgreSQL (a fresh schema per
// test) and Redis (a fresh prefix per test), with the fake upstream served
// from this process. They skip when PostgreSQL or Redis is unreachable.

// --- PostgreSQL ---

var (
	pgOnce sync.Once
	pgBase string
	pgErr  error
)

func pgCandidates() []string {
	if d := os.Getenv("LLMSPEND_TEST_POSTGRES"); d != "" {
		return []string{d}
	}
	return []string{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		"postgres://root@127.0.0.1:5432/test?sslmode=disable",
	}
}

// pgServer returns the base DSN or skips when no PostgreSQL answers.
func pgServer(t testing.TB) string {
	t.Helper()
	pgOnce.Do(func() {
		var errs []error
		for _, dsn := range pgCandidates() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := pgx.Connect(ctx, dsn)
			if err == nil {
				err = c.Ping(ctx)
				c.Close(ctx)
			}
			cancel()
			if err == nil {
				pgBase = dsn
				return
			}
			errs = append(errs, err)
		}
		pgErr = errors.Join(errs...)
	})
	if pgErr != nil {
		var pe *pgconn.PgError
		if errors.As(pgErr, &pe) {
			t.Fatalf("PostgreSQL answered but refused every candidate DSN: %v", pgErr)
		}
		t.Skipf("PostgreSQL unreachable at 127.0.0.1:5432 (start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set LLMSPEND_TEST_POSTGRES): %v", pgErr)
	}
	return pgBase
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pgSchema returns a DSN on a fresh schema, dropped at cleanup.
func pgSchema(t testing.TB) string {
	t.Helper()
	base := pgServer(t)
	schema := "llmspend_cluster_" + randHex(6)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// viaProxy returns dsn with its host:port replaced.
func viaProxy(t testing.TB, dsn, hostport string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

// --- Redis ---

var (
	redisOnce sync.Once
	redisErr  error
)

const testRedisAddr = "127.0.0.1:6379"

func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	redisOnce.Do(func() {
		c := redis.NewClient(&redis.Options{Addr: testRedisAddr, DialTimeout: 2 * time.Second})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		redisErr = c.Ping(ctx).Err()
	})
	if redisErr != nil {
		t.Skipf("Redis unreachable at %s (start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`): %v", testRedisAddr, redisErr)
	}
	c := redis.NewClient(&redis.Options{Addr: testRedisAddr})
	t.Cleanup(func() { c.Close() })
	return c
}

// redisPrefix returns a fresh prefix whose keys are deleted at cleanup.
func redisPrefix(t testing.TB, c *redis.Client) string {
	t.Helper()
	p := "test-" + randHex(8)
	t.Cleanup(func() { wipePrefix(t, c, p) })
	return p
}

// wipePrefix deletes every key of a prefix: what a Redis restarted
// without persistence looks like to the gateways.
func wipePrefix(t testing.TB, c *redis.Client, prefix string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, "llmspend:{"+prefix+"}:*").Result()
	if err != nil {
		t.Errorf("keys: %v", err)
		return 0
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("del: %v", err)
		}
	}
	return len(keys)
}

// killClients closes every Redis connection named name (the gateways'):
// they see a dead connection, as with a Redis restart.
func killClients(t testing.TB, c *redis.Client, name string) int {
	t.Helper()
	ctx := context.Background()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		var id, nm string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(f, "name="); ok {
				nm = v
			}
		}
		if nm == name && id != "" {
			if err := c.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err == nil {
				n++
			}
		}
	}
	return n
}

// --- Caddy processes ---

var (
	caddyBinOnce sync.Once
	caddyBin     string
	caddyBinErr  error
)

// buildCaddy builds ./cmd/caddy once per test run (into the temporary
// XDG_DATA_HOME that TestMain removes).
func buildCaddy(t testing.TB) string {
	t.Helper()
	caddyBinOnce.Do(func() {
		dir := os.Getenv("XDG_DATA_HOME")
		if dir == "" {
			dir = os.TempDir()
		}
		caddyBin = filepath.Join(dir, "llmspend-caddy-"+randHex(4))
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		cmd := exec.Command(gobin, "build", "-o", caddyBin, "../cmd/caddy")
		out, err := cmd.CombinedOutput()
		if err != nil {
			caddyBinErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if caddyBinErr != nil {
		t.Fatal(caddyBinErr)
	}
	return caddyBin
}

// clusterEnv is what the instances of one test share.
type clusterEnv struct {
	t         *testing.T
	bin       string
	dsn       string // what the gateways use (may go through a proxy)
	directDSN string
	rdb       *redis.Client
	prefix    string
	batch     string
	upstream  *fakeupstream.Server
	upURL     string
	extra     string // more lines in the llm_spend block
	noRedis   bool   // start instances on PostgreSQL alone
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	dsn := pgSchema(t)
	rdb := redisClient(t)
	e := &clusterEnv{t: t, bin: buildCaddy(t), dsn: dsn, directDSN: dsn, rdb: rdb, prefix: redisPrefix(t, rdb), batch: "20ms"}
	e.upstream = fakeupstream.New()
	e.upstream.Record = false
	srv := httptest.NewServer(e.upstream)
	t.Cleanup(srv.Close)
	e.upURL = srv.URL
	return e
}

// clientName is the Redis client name of this test's gateways.
func (e *clusterEnv) clientName() string { return "llmspend-" + e.prefix }

type instance struct {
	t       *testing.T
	name    string
	port    int
	base    string
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	client  *http.Client
	logPath string
}

// start launches one gateway process.
func (e *clusterEnv) start(name string) *instance {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, name: name, port: freePort(t), dir: dir, client: &http.Client{Timeout: 30 * time.Second},
		logPath: filepath.Join(dir, "caddy.log")}
	in.base = fmt.Sprintf("http://127.0.0.1:%d", in.port)
	redisURL := fmt.Sprintf("redis://%s/0?client_name=%s", testRedisAddrFor, e.clientName())
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		level %s
		output file %s
	}
	storage file_system %s
	llm_spend {
		master_key %s
		store postgres "%s"
		redis %s {
			prefix %s
			batch %s
		}
		%s
	}
}
http://127.0.0.1:%d {
	@nov1 path /chat/completions /completions /embeddings /responses /messages
	rewrite @nov1 /v1{path}
	handle /v1/* {
		llm_spend
		reverse_proxy %s {
			header_up Authorization "Bearer sk-upstream-real-openai"
		}
	}
	handle {
		llm_spend_admin
		respond "no such route" 404
	}
}
`, clusterLogLevel(), in.logPath, filepath.Join(dir, "data"), testMasterKey, e.dsn, redisURL, e.prefix, e.batch, e.extra, in.port, e.upURL)
	if e.noRedis {
		cf = strings.Replace(cf, fmt.Sprintf("redis %s {\n\t\t\tprefix %s\n\t\t\tbatch %s\n\t\t}", redisURL, e.prefix, e.batch), "", 1)
		if strings.Contains(cf, "redis ") {
			t.Fatal("could not remove the redis block")
		}
	}
	cfPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(e.bin, "run", "--config", cfPath, "--adapter", "caddyfile")
	in.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	in.cmd.Stdout, in.cmd.Stderr = out, out
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.exited = make(chan struct{})
	go func() { in.cmd.Wait(); out.Close(); close(in.exited) }()
	t.Cleanup(func() {
		in.stop()
		if t.Failed() {
			in.dumpLog()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := in.client.Get(in.base + "/health/liveliness")
		if err == nil {
			res.Body.Close()
			break
		}
		select {
		case <-in.exited:
			in.dumpLog()
			t.Fatalf("%s exited at start", name)
		default:
		}
		if time.Now().After(deadline) {
			in.dumpLog()
			t.Fatalf("%s not answering: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return in
}

func clusterLogLevel() string {
	if v := os.Getenv("LLMSPEND_TEST_LOG"); v != "" {
		return v
	}
	return "WARN"
}

// stop ends the process gracefully (SIGINT: the ledger flushes).
func (in *instance) stop() {
	select {
	case <-in.exited:
		return
	default:
	}
	_ = in.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-in.exited:
	case <-time.After(20 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.exited
	}
}

func (in *instance) dumpLog() {
	for _, f := range []string{in.logPath, filepath.Join(in.dir, "stdout.log")} {
		data, _ := os.ReadFile(f)
		if len(data) > 20000 {
			data = data[len(data)-20000:]
		}
		in.t.Logf("--- %s %s:\n%s", in.name, filepath.Base(f), data)
	}
}

// logHas reports whether the instance's log has a line containing s.
func (in *instance) logHas(s string) bool {
	f, err := os.Open(in.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

func (in *instance) do(method, path, auth string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = strings.NewReader(string(js))
	}
	req, err := http.NewRequest(method, in.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := in.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	return res.StatusCode, data, err
}

func (in *instance) admin(method, path string, body any) map[string]any {
	in.t.Helper()
	st, data, err := in.do(method, path, testMasterKey, body)
	if err != nil || st != http.StatusOK {
		in.t.Fatalf("%s %s %s: %d %v %s", in.name, method, path, st, err, data)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		in.t.Fatalf("%s %s: %v: %s", method, path, err, data)
	}
	return m
}

func (in *instance) chat(key string) (int, error) {
	st, _, err := in.chatBody(key)
	return st, err
}

func (in *instance) chatBody(key string) (int, []byte, error) {
	return in.do("POST", "/v1/chat/completions", key, map[string]any{
		"model":      "gpt-4o-mini",
		"messages":   []map[string]string{{"role": "user", "content": "hi"}},
		"max_tokens": 50,
	})
}

// untilExhausted sends requests for key through the instances from
// `workers` goroutines until each has been refused with "budget
// exhausted" (not the transient "requests in flight reserve the rest"),
// and returns how many were served.
func untilExhausted(t *testing.T, ins []*instance, key string, workers int) int {
	t.Helper()
	var mu sync.Mutex
	served := 0
	var firstErr error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 100000; i++ {
				in := ins[i%len(ins)]
				st, body, err := in.chatBody(key)
				mu.Lock()
				if err == nil && st == 200 {
					served++
				}
				mu.Unlock()
				switch {
				case err == nil && st == 200:
				case err == nil && st == 429 && !strings.Contains(string(body), "in flight"):
					return
				case err == nil && st == 429:
					time.Sleep(time.Millisecond)
				default:
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("via %s: status %d, %v %s", in.name, st, err, body)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return served
}

// keySpend reads /key/info's spend exactly (the JSON number as decimal USD).
func (in *instance) keySpend(key string) money.Pico {
	in.t.Helper()
	st, data, err := in.do("GET", "/key/info?key="+url.QueryEscape(key), testMasterKey, nil)
	if err != nil || st != 200 {
		in.t.Fatalf("%s key/info: %d %v %s", in.name, st, err, data)
	}
	var v struct {
		Info struct {
			Spend json.Number `json:"spend"`
		} `json:"info"`
	}
	d := json.NewDecoder(strings.NewReader(string(data)))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		in.t.Fatal(err)
	}
	p, err := money.ParseUSD(v.Info.Spend.String())
	if err != nil {
		in.t.Fatalf("spend %q: %v", v.Info.Spend, err)
	}
	return p
}

func (in *instance) newKey(fields map[string]any) (plain, id string) {
	in.t.Helper()
	out := in.admin("POST", "/key/generate", fields)
	plain, _ = out["key"].(string)
	tok, _ := out["token"].(string)
	if plain == "" || tok == "" {
		in.t.Fatalf("key/generate: %v", out)
	}
	return plain, tok
}

// perRequest is what one chat request costs: the fake upstream's usage
// (23 prompt, 41 completion tokens) at gpt-4o-mini's reference price.
var perRequest = openAICost("gpt-4o-mini", fakeupstream.Usage{InputTokens: 23, OutputTokens: 41})

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%s)", what, d, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storedKeySpend reads a key's spend straight from PostgreSQL.
func (e *clusterEnv) storedKeySpend(token string) money.Pico {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, e.directDSN)
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	k, err := st.GetKeyByToken(ctx, token)
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Spend
}

// counter reads a key's shared counter (no budget window).
func (e *clusterEnv) counter(keyID string) money.Pico {
	e.t.Helper()
	ctr, _ := cluster.New(e.rdb, e.prefix, nil)
	v, err := ctr.Get(context.Background(), []cluster.Key{{Kind: store.KindKey, ID: keyID}})
	if err != nil {
		e.t.Fatal(err)
	}
	return v[cluster.Key{Kind: store.KindKey, ID: keyID}]
}

// keyID returns a key's stable ID from the store.
func (e *clusterEnv) keyID(token string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, e.directDSN)
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	k, err := st.GetKeyByToken(ctx, token)
	if err != nil {
		e.t.Fatal(err)
	}
	return k.ID
}

// traffic sends n requests for key, alternating between the instances
// from `workers` goroutines; it returns how many were answered 200 and
// fails on anything but 200 unless allow429.
func traffic(t *testing.T, ins []*instance, key string, n, workers int, allow429 bool) int {
	t.Helper()
	var mu sync.Mutex
	ok, refused := 0, 0
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				st, err := ins[i%len(ins)].chat(key)
				mu.Lock()
				switch {
				case err == nil && st == 200:
					ok++
				case err == nil && st == 429 && allow429:
					refused++
				default:
					if firstErr == nil {
						firstErr = fmt.Errorf("request %d via %s: status %d, %v", i, ins[i%len(ins)].name, st, err)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return ok
}

// allAgree waits until /key/info on every instance, the store and the
// shared counter all show want.
func (e *clusterEnv) allAgree(ins []*instance, plain, token string, want money.Pico) {
	t := e.t
	t.Helper()
	for _, in := range ins {
		eventually(t, 10*time.Second, in.name+" /key/info spend", func() (bool, string) {
			got := in.keySpend(plain)
			return got == want, fmt.Sprintf("got %v want %v", got, want)
		})
	}
	eventually(t, 10*time.Second, "stored spend", func() (bool, string) {
		got := e.storedKeySpend(token)
		return got == want, fmt.Sprintf("got %v want %v", got, want)
	})
	id := e.keyID(token)
	eventually(t, 10*time.Second, "shared counter", func() (bool, string) {
		got := e.counter(id)
		return got == want, fmt.Sprintf("got %v want %v", got, want)
	})
}

// TestClusterSharedSpend: interleaved traffic through two instances adds
// up exactly everywhere; a budget stops both; key changes on one reach the
// other within a second.
func TestClusterSharedSpend(t *testing.T) {
	e := newClusterEnv(t)
	a := e.start("A")
	b := e.start("B")
	ins := []*instance{a, b}

	// Exact totals: a key created on A, used through both.
	plain, token := a.newKey(map[string]any{"key_alias": "shared"})
	n := traffic(t, ins, plain, 300, 8, false)
	e.allAgree(ins, plain, token, perRequest*money.Pico(n))

	// The budget stops both. Alone, each instance would admit a whole
	// budget (400 requests in total); shared, they stop near 200.
	const budgetReqs = 200
	budget := perRequest * budgetReqs
	bplain, btoken := b.newKey(map[string]any{"key_alias": "budget", "max_budget": float64(budget) / float64(money.USD)})
	served := untilExhausted(t, ins, bplain, 8)
	if served < budgetReqs {
		t.Fatalf("only %d requests served for a budget of %d", served, budgetReqs)
	}
	// Bound: each instance may admit about one batch interval (20 ms) of
	// the other's traffic beyond the budget (it sees that spend one batch
	// late); at a few thousand requests per second that is tens of
	// requests. Unshared budgets would serve about 2x.
	if served > budgetReqs*3/2 {
		t.Fatalf("served %d requests for a budget of %d: budgets not shared", served, budgetReqs)
	}
	t.Logf("budget of %d requests: %d served across two instances", budgetReqs, served)
	// An instance that did not see the last of the other's spend learns
	// it from the reply to its next batch, or from the periodic refresh.
	for _, in := range ins {
		eventually(t, 2*time.Second, in.name+" refuses the exhausted key", func() (bool, string) {
			st, _ := in.chat(bplain)
			if st == 200 {
				served++
			}
			return st == 429, fmt.Sprint(st)
		})
	}
	e.allAgree(ins, bplain, btoken, perRequest*money.Pico(served))

	// Regenerated on A: refused on B within a second; the new key works there.
	t0 := time.Now()
	out := a.admin("POST", "/key/regenerate", map[string]any{"key": plain})
	newPlain, _ := out["key"].(string)
	eventually(t, time.Second, "old key refused on B", func() (bool, string) {
		st, _ := b.chat(plain)
		return st == 401, fmt.Sprint(st)
	})
	t.Logf("regenerate on A -> old key refused on B after %v", time.Since(t0))
	eventually(t, time.Second, "new key served on B", func() (bool, string) {
		st, _ := b.chat(newPlain)
		return st == 200, fmt.Sprint(st)
	})

	// Blocked on B: refused on A within a second.
	b.admin("POST", "/key/update", map[string]any{"key": newPlain, "blocked": true})
	eventually(t, time.Second, "blocked key refused on A", func() (bool, string) {
		st, _ := a.chat(newPlain)
		return st == 401, fmt.Sprint(st)
	})
	// A new budget set on A binds on B.
	b.admin("POST", "/key/update", map[string]any{"key": newPlain, "blocked": false})
	a.admin("POST", "/key/update", map[string]any{"key": newPlain, "max_budget": 0.000001})
	eventually(t, time.Second, "new budget enforced on B", func() (bool, string) {
		st, _ := b.chat(newPlain)
		return st == 429, fmt.Sprint(st)
	})
	// Deleted on B: refused on A within a second.
	b.admin("POST", "/key/delete", map[string]any{"keys": []string{bplain}})
	eventually(t, time.Second, "deleted key refused on A", func() (bool, string) {
		st, _ := a.chat(bplain)
		return st == 401, fmt.Sprint(st)
	})
	// A key created on B works on A at once (cache miss -> store).
	k3, _ := b.newKey(nil)
	if st, err := a.chat(k3); st != 200 {
		t.Fatalf("key created on B, used on A: %d %v", st, err)
	}
}

// TestClusterRedisRestart: Redis loses everything (the prefix's keys are
// deleted) and the gateways' connections are killed, several times during
// traffic. No request fails and, once reconciled, every view is exact.
func TestClusterRedisRestart(t *testing.T) {
	e := newClusterEnv(t)
	a := e.start("A")
	b := e.start("B")
	ins := []*instance{a, b}
	plain, token := a.newKey(nil)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			if i%2 == 0 {
				wipePrefix(t, e.rdb, e.prefix)
			} else {
				killClients(t, e.rdb, e.clientName())
			}
		}
	}()
	n := 0
	for range 6 {
		n += traffic(t, ins, plain, 200, 8, false)
	}
	close(stop)
	<-done
	e.allAgree(ins, plain, token, perRequest*money.Pico(n))

	// Both stop, Redis loses everything while they are down, one starts:
	// the counter is rebuilt from PostgreSQL at load.
	a.stop()
	b.stop()
	wipePrefix(t, e.rdb, e.prefix)
	c := e.start("C")
	e.allAgree([]*instance{c}, plain, token, perRequest*money.Pico(n))
}

// TestClusterRedisDown: while Redis is unreachable (a proxy in front of
// it refuses connections) the gateways serve on local counters and log it
// once; when it is back they reconcile and every view is exact.
func TestClusterRedisDown(t *testing.T) {
	e := newClusterEnv(t)
	// A proxy we can stop stands in for Redis.
	px := startProxy(t, testRedisAddr)
	e.rdb = redisClient(t)
	saved := testRedisAddrFor
	testRedisAddrFor = px.addr()
	defer func() { testRedisAddrFor = saved }()
	a := e.start("A")
	b := e.start("B")
	ins := []*instance{a, b}
	plain, token := a.newKey(nil)
	n := traffic(t, ins, plain, 100, 4, false)
	px.pause()
	n += traffic(t, ins, plain, 200, 4, false)
	eventually(t, 10*time.Second, "fallback logged", func() (bool, string) {
		return a.logHas("enforcing budgets on local counters") && b.logHas("enforcing budgets on local counters"), ""
	})
	n += traffic(t, ins, plain, 100, 4, false)
	px.resume()
	eventually(t, 10*time.Second, "reconcile logged", func() (bool, string) {
		return a.logHas("are back; reconciling") && b.logHas("are back; reconciling"), ""
	})
	n += traffic(t, ins, plain, 100, 4, false)
	e.allAgree(ins, plain, token, perRequest*money.Pico(n))
}

// TestClusterPostgresOutage: PostgreSQL is unreachable for a few seconds.
// Requests with cached keys are served throughout; the spend is written
// once it is back, the counters stay exact, and an alert email waiting in
// the outbox is delivered once the outbox is reachable again.
func TestClusterPostgresOutage(t *testing.T) {
	e := newClusterEnv(t)
	srv := smtptest.Start(t, smtptest.Options{})
	e.extra = alertSMTPBlock(srv) + "\n\t\talerts email"
	e.upstream.Set(func(s *fakeupstream.Server) { s.Usage = alertUsage })
	per := openAICost("gpt-4o-mini", alertUsage)
	u, _ := url.Parse(e.directDSN)
	px := startProxy(t, u.Host)
	e.dsn = viaProxy(t, e.directDSN, px.addr())
	a := e.start("A")
	b := e.start("B")
	ins := []*instance{a, b}
	a.admin("POST", "/user/new", map[string]any{"user_id": "owner", "user_email": "owner@example.com", "auto_create_key": false, "send_invite_email": false})
	plain, token := a.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.002})

	// The soft alert is claimed and queued while the mail server is down.
	srv.Down()
	n := traffic(t, ins, plain, 10, 2, false) // $0.0075 > $0.002
	eventually(t, 5*time.Second, "alert queued", func() (bool, string) {
		ob := a.admin("GET", "/email/outbox?status=pending", nil)
		list, _ := ob["messages"].([]any)
		return len(list) == 1, fmt.Sprint(len(list))
	})

	px.pause()
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	for time.Since(outage) < 3*time.Second {
		n += traffic(t, ins, plain, 20, 4, false)
	}
	// The instances saw the outage (their write-behind failed).
	eventually(t, 10*time.Second, "write-behind failures logged", func() (bool, string) {
		return a.logHas("spend write-behind failed") && b.logHas("spend write-behind failed"), ""
	})
	px.resume()
	n += traffic(t, ins, plain, 20, 4, false)
	e.allAgree(ins, plain, token, per*money.Pico(n))
	msgs, err := srv.WaitFor(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if subj := parseMail(t, msgs[0].Data).Subject; !strings.Contains(subj, "Soft Budget") {
		t.Fatalf("subject %q", subj)
	}
	eventually(t, 10*time.Second, "outbox marked sent", func() (bool, string) {
		ob := b.admin("GET", "/email/outbox?status=sent", nil)
		list, _ := ob["messages"].([]any)
		return len(list) >= 1, fmt.Sprint(ob["counts"])
	})
}

// TestClusterAlertsOnce: traffic through both instances crosses the soft
// budget, the 80% alert point and the budget; each alert is mailed once
// cluster-wide (claims in PostgreSQL), though both instances see the
// crossings.
func TestClusterAlertsOnce(t *testing.T) {
	e := newClusterEnv(t)
	srv := smtptest.Start(t, smtptest.Options{})
	e.extra = alertSMTPBlock(srv) + "\n\t\talerts email"
	e.upstream.Set(func(s *fakeupstream.Server) { s.Usage = alertUsage })
	per := openAICost("gpt-4o-mini", alertUsage)
	a := e.start("A")
	b := e.start("B")
	ins := []*instance{a, b}
	a.admin("POST", "/user/new", map[string]any{"user_id": "owner", "user_email": "owner@example.com", "auto_create_key": false, "send_invite_email": false})
	// $0.00075 per request: soft at ~14 requests, 80% at ~22, max at 27.
	plain, token := b.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.01, "max_budget": 0.02})
	served := untilExhausted(t, ins, plain, 6)
	for _, in := range ins {
		eventually(t, 2*time.Second, in.name+" refuses the exhausted key", func() (bool, string) {
			st, _ := in.chat(plain)
			if st == 200 {
				served++
			}
			return st == 429, fmt.Sprint(st)
		})
	}
	e.allAgree(ins, plain, token, per*money.Pico(served))
	msgs, err := srv.WaitFor(2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a duplicate would arrive by now
	msgs = srv.Messages()
	var subjects []string
	for _, m := range msgs {
		subjects = append(subjects, parseMail(t, m.Data).Subject)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d emails, want one soft and one max: %q", len(msgs), subjects)
	}
	soft, maxb := 0, 0
	for _, s := range subjects {
		if strings.Contains(s, "Soft Budget") {
			soft++
		}
		if strings.Contains(s, "Max Budget") {
			maxb++
		}
	}
	if soft != 1 || maxb != 1 {
		t.Fatalf("emails %q", subjects)
	}
}

// --- a TCP proxy that can be paused ---

// testRedisAddrFor is the Redis address the gateways are given (a proxy
// in TestClusterRedisDown).
var testRedisAddrFor = testRedisAddr

type tcpProxy struct {
	t      testing.TB
	l      net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]struct{}
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, l: l, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.pause() })
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			c.Close() // refused, as by a server that is down
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// pause cuts every connection and refuses new ones until resume.
func (p *tcpProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}
