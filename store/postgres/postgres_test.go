package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/store/internal/sqlcodec"
	"github.com/llmspend/llmspend/store/storetest"
)

// The tests run against a real server: $LLMSPEND_TEST_POSTGRES when set,
// else the local one (trust auth, database test, user postgres or root).
// Every test works in its own freshly created schema, dropped at cleanup.
var (
	baseOnce sync.Once
	baseDSN  string
	baseErr  error // set: skip (server unreachable)
	baseFail error // set: fail (reachable but unusable)
)

func candidateDSNs() []string {
	if d := os.Getenv("LLMSPEND_TEST_POSTGRES"); d != "" {
		return []string{d}
	}
	return []string{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		"postgres://root@127.0.0.1:5432/test?sslmode=disable",
	}
}

// unreachable reports whether err means no server answered (as opposed
// to a server that refused us).
func unreachable(err error) bool {
	var pe *pgconn.PgError
	return !errors.As(err, &pe)
}

func findServer() {
	var errs []error
	allUnreachable := true
	for _, dsn := range candidateDSNs() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			baseDSN = dsn
			return
		}
		errs = append(errs, err)
		allUnreachable = allUnreachable && unreachable(err)
	}
	if allUnreachable {
		baseErr = errors.Join(errs...)
	} else {
		baseFail = errors.Join(errs...)
	}
}

// serverDSN returns the base DSN or skips the test when no server answers.
func serverDSN(tb testing.TB) string {
	tb.Helper()
	baseOnce.Do(findServer)
	if baseErr != nil {
		tb.Skipf("PostgreSQL unreachable at 127.0.0.1:5432 (start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set LLMSPEND_TEST_POSTGRES): %v", baseErr)
	}
	if baseFail != nil {
		tb.Fatalf("PostgreSQL answered but refused every candidate DSN: %v", baseFail)
	}
	return baseDSN
}

// withParam returns dsn with one more query parameter.
func withParam(tb testing.TB, dsn, k, v string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("test DSN must be a URL: %v", err)
	}
	q := u.Query()
	q.Set(k, v)
	// pgx unescapes query values as paths: '+' stays a plus, so spaces
	// must be %20.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

func randomName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "llmspend_test_" + hex.EncodeToString(b)
}

// freshSchema returns a DSN whose search_path is a schema that does not
// exist yet (Open creates it), and drops the schema at cleanup.
func freshSchema(tb testing.TB) (dsn, schema string) {
	tb.Helper()
	base := serverDSN(tb)
	schema = randomName()
	tb.Cleanup(func() { dropSchema(tb, base, schema) })
	return withParam(tb, base, "search_path", schema), schema
}

func dropSchema(tb testing.TB, base, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
		tb.Errorf("drop schema %s: %v", schema, err)
	}
}

func openDSN(tb testing.TB, dsn string) *Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func openFresh(tb testing.TB) *Store {
	tb.Helper()
	dsn, _ := freshSchema(tb)
	return openDSN(tb, dsn)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
}

func TestSchema(t *testing.T) {
	ctx := t.Context()
	dsn, schema := freshSchema(t)
	s := openDSN(t, dsn)
	if s.Schema() != schema {
		t.Fatalf("Schema() = %q, want %q", s.Schema(), schema)
	}
	var v, n int
	if err := s.pool.QueryRow(ctx, `SELECT MAX(version), COUNT(*) FROM schema_migrations`).Scan(&v, &n); err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) || n != len(migrations) {
		t.Fatalf("schema_migrations: max %d count %d, want %d", v, n, len(migrations))
	}
	// Every table landed in the named schema, none in public.
	var tables []string
	rows, err := s.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
	WHERE table_schema = $1 ORDER BY table_name`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := "alert_claims daily_spend invitations keys outbox schema_migrations users"
	if got := strings.Join(tables, " "); got != want {
		t.Fatalf("tables in %s: %s, want %s", schema, got, want)
	}
	// Money and times are 64-bit integers (exact pico-USD, nanoseconds).
	var typ string
	if err := s.pool.QueryRow(ctx, `SELECT data_type FROM information_schema.columns
	WHERE table_schema = $1 AND table_name = 'keys' AND column_name = 'budget_reset_at'`, schema).Scan(&typ); err != nil || typ != "bigint" {
		t.Fatalf("keys.budget_reset_at type %q, %v", typ, err)
	}
	// The migration lock is not left held by the pool.
	var held int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'
	AND objid = ($1::bigint & x'ffffffff'::bigint)::oid AND pid = pg_backend_pid()`, migrateLockKey).Scan(&held); err != nil || held != 0 {
		t.Fatalf("advisory lock held after Open: %d, %v", held, err)
	}
}

// TestOpenRace starts several instances on one fresh schema at once: the
// advisory lock makes all of them succeed and applies each migration once.
func TestOpenRace(t *testing.T) {
	dsn, schema := freshSchema(t)
	const n = 6
	var wg sync.WaitGroup
	stores := make([]*Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stores[i], errs[i] = Open(ctx, dsn)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	var v, cnt int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT MAX(version), COUNT(*) FROM schema_migrations`).Scan(&v, &cnt); err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) || cnt != len(migrations) {
		t.Fatalf("schema %s: version %d with %d rows, want %d once each", schema, v, cnt, len(migrations))
	}
	// All instances see one database.
	if err := stores[1].CreateUser(t.Context(), &store.User{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[n-1].GetUser(t.Context(), "u"); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateWaitsForLock holds the migration lock from another session:
// Open must wait for it (not skip it), then succeed once it is released.
func TestMigrateWaitsForLock(t *testing.T) {
	dsn, _ := freshSchema(t)
	ctx := t.Context()
	holder, err := pgx.Connect(ctx, serverDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s, err := Open(context.Background(), dsn)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Open finished while another session held the migration lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open after unlock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open still blocked after the lock was released")
	}

	// A cancelled context ends the wait with an error.
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if s, err := Open(cctx, dsn); err == nil {
		s.Close()
		t.Fatal("Open succeeded while the lock was held and its context expired")
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	dsn, _ := freshSchema(t)
	s := openDSN(t, dsn)
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)`,
		len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(t.Context(), dsn); err == nil {
		s2.Close()
		t.Fatal("opened a database with a newer schema")
	} else if !errors.Is(err, errNewerSchema) {
		t.Fatalf("unexpected error: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	dsn, _ := freshSchema(t)
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	w := time.Date(2026, 5, 1, 0, 0, 0, 1, time.UTC)
	if err := s.CreateKey(ctx, &store.Key{ID: "k1", Token: "tok", BudgetResetAt: &w}); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, store.SpendBatch{Deltas: []store.SpendDelta{
		{Kind: store.KindKey, ID: "k1", Window: &w, Amount: 5 * money.USD}}}); err != nil {
		t.Fatal(err)
	}
	id, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: "i1"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openDSN(t, dsn)
	k, err := s.GetKeyByToken(ctx, "tok")
	if err != nil || k.Spend != 5*money.USD || !k.BudgetResetAt.Equal(w) {
		t.Fatalf("reopened key = %+v, %v", k, err)
	}
	id2, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: "i2"})
	if err != nil || id2 <= id {
		t.Fatalf("second id %d after %d, %v", id2, id, err)
	}
}

// TestQuotedSchema uses a search_path that needs quoting (capitals, a
// space, a quote): Open must create and use exactly that schema.
func TestQuotedSchema(t *testing.T) {
	base := serverDSN(t)
	schema := "Llm Spend\"" + randomName()[len("llmspend_test_"):]
	t.Cleanup(func() { dropSchema(t, base, schema) })
	s := openDSN(t, withParam(t, base, "search_path", pgx.Identifier{schema}.Sanitize()+", public"))
	if s.Schema() != schema {
		t.Fatalf("Schema() = %q, want %q", s.Schema(), schema)
	}
	if err := s.CreateUser(t.Context(), &store.User{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM `+pgx.Identifier{schema, "users"}.Sanitize()).Scan(&n); err != nil || n != 1 {
		t.Fatalf("users in %q: %d, %v", schema, n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	_, err := Open(ctx, "postgres://user:s3cret@127.0.0.1:5432/db?sslmode=bogus")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("bad DSN: err %v (must fail without echoing the password)", err)
	}
	if _, err := Open(ctx, `host=127.0.0.1 search_path='"unterminated'`); err == nil {
		t.Fatal("unterminated quoted search_path accepted")
	}
	// Nothing listens on port 1.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s, err := Open(cctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"); err == nil {
		s.Close()
		t.Fatal("Open of an unreachable server succeeded")
	}
}

func TestFirstSchema(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"xyz":                "xyz",
		" XyZ , public":      "xyz",
		`"XyZ", public`:      "XyZ",
		`"a,b"`:              "a,b",
		`"a""b"`:             `a"b`,
		`"$user", public`:    "$user",
		`$user, public`:      "",
		`  "sp ace" ,public`: "sp ace",
	} {
		got, err := firstSchema(in)
		if err != nil || got != want {
			t.Errorf("firstSchema(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`"`, `"abc`, `""`, `,public`, `"a"b`} {
		if got, err := firstSchema(in); err == nil {
			t.Errorf("firstSchema(%q) = %q, want an error", in, got)
		}
	}
}

// FuzzFirstSchema: any name quoted the way pgx quotes identifiers parses
// back to itself, and no input panics.
func FuzzFirstSchema(f *testing.F) {
	f.Add("tenant")
	f.Add(`we"ird, name`)
	f.Add("Ünïcode")
	f.Fuzz(func(t *testing.T, name string) {
		_, _ = firstSchema(name)
		if name == "" || strings.ContainsRune(name, 0) {
			return
		}
		quoted := pgx.Identifier{name}.Sanitize() + ", public"
		got, err := firstSchema(quoted)
		if err != nil || got != name {
			t.Fatalf("firstSchema(%q) = %q, %v; want %q", quoted, got, err, name)
		}
	})
}

// TestTimeExtremes stores the clamped ends of the time range and a
// nanosecond-precise instant: BIGINT keeps every one exactly.
func TestTimeExtremes(t *testing.T) {
	ctx := t.Context()
	s := openFresh(t)
	for i, in := range []time.Time{
		time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", -7*3600)),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),      // clamps to the minimum
		time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), // clamps to the maximum
		time.Unix(0, 1),
	} {
		id := fmt.Sprint("k", i)
		if err := s.CreateKey(ctx, &store.Key{ID: id, Token: id, Expires: &in}); err != nil {
			t.Fatal(err)
		}
		k, err := s.GetKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := sqlcodec.FromNanos(sqlcodec.Nanos(in))
		if !k.Expires.Equal(want) || k.Expires.Location() != time.UTC {
			t.Errorf("%v stored, %v read, want %v", in, k.Expires, want)
		}
	}
}

// TestTwoStoresClaimDue: two instances (two pools) work one outbox; no
// message is claimed twice and none is left behind.
func TestTwoStoresClaimDue(t *testing.T) {
	ctx := t.Context()
	dsn, _ := freshSchema(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	const total = 400
	base := time.Now()
	for i := range total {
		s := a
		if i%2 == 1 {
			s = b
		}
		if _, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: fmt.Sprint("m", i),
			NextAttemptAt: base.Add(-time.Duration(i) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	// Eight workers, four on each instance.
	claimed := storetest.ClaimConcurrently(t, base, 5, a, b, a, b, a, b, a, b)
	storetest.CheckClaimedOnce(t, claimed, total)
	c, err := a.OutboxCounts(ctx)
	if err != nil || c[store.StatusSending] != total || c[store.StatusPending] != 0 {
		t.Fatalf("counts after claiming = %v, %v", c, err)
	}
}

// TestTwoStoresClaimAlert: many callers on two instances race for the
// same alert claim, for a new claim, a changed window and an expired one.
func TestTwoStoresClaimAlert(t *testing.T) {
	dsn, _ := freshSchema(t)
	stores := []*Store{openDSN(t, dsn), openDSN(t, dsn)}
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	race := func(c store.AlertClaim, at time.Time) int {
		var wins, errs int
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				won, err := stores[i%2].ClaimAlert(context.Background(), c, at, time.Hour)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs++
					t.Errorf("ClaimAlert: %v", err)
				}
				if won {
					wins++
				}
			}()
		}
		close(start)
		wg.Wait()
		return wins
	}
	for round := range 5 {
		c := store.AlertClaim{Kind: store.KindKey, ID: fmt.Sprint("k", round), AlertType: "max_budget", Threshold: 100, Window: "w1|10"}
		if w := race(c, now); w != 1 {
			t.Fatalf("round %d fresh claim: %d winners, want 1", round, w)
		}
		c.Window = "w2|10"
		if w := race(c, now.Add(time.Second)); w != 1 {
			t.Fatalf("round %d new window: %d winners, want 1", round, w)
		}
		if w := race(c, now.Add(2*time.Hour)); w != 1 {
			t.Fatalf("round %d expired claim: %d winners, want 1", round, w)
		}
		if w := race(c, now.Add(2*time.Hour+time.Minute)); w != 0 {
			t.Fatalf("round %d live claim: %d winners, want 0", round, w)
		}
	}
}

// TestTwoStoresApplySpend: two instances flush overlapping batches, listed
// in opposite orders, at the same time. Without a fixed lock order these
// deadlock; the totals must come out exact either way.
func TestTwoStoresApplySpend(t *testing.T) {
	ctx := t.Context()
	dsn, _ := freshSchema(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	w := time.Date(2026, 4, 1, 0, 0, 0, 5, time.UTC)
	const ents = 20
	var fwd store.SpendBatch
	for i := range ents {
		id := fmt.Sprintf("e%02d", i)
		if err := a.CreateKey(ctx, &store.Key{ID: id, Token: "t" + id, BudgetResetAt: &w}); err != nil {
			t.Fatal(err)
		}
		if err := a.CreateUser(ctx, &store.User{UserID: id}); err != nil {
			t.Fatal(err)
		}
		fwd.Deltas = append(fwd.Deltas,
			store.SpendDelta{Kind: store.KindKey, ID: id, Window: &w, Amount: 7},
			store.SpendDelta{Kind: store.KindUser, ID: id, Amount: 3})
		fwd.Daily = append(fwd.Daily, store.DailySpend{KeyID: id, Model: "m", Day: "2026-04-01", Spend: 7, Requests: 1})
	}
	var rev store.SpendBatch
	for i := len(fwd.Deltas) - 1; i >= 0; i-- {
		rev.Deltas = append(rev.Deltas, fwd.Deltas[i])
	}
	for i := len(fwd.Daily) - 1; i >= 0; i-- {
		rev.Daily = append(rev.Daily, fwd.Daily[i])
	}
	const rounds = 40
	var wg sync.WaitGroup
	for g := range 4 {
		s, batch := a, fwd
		if g%2 == 1 {
			s, batch = b, rev
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := s.ApplySpend(ctx, batch); err != nil {
					t.Errorf("ApplySpend: %v", err)
					return
				}
			}
		}()
	}
	// A third writer deletes and touches keys meanwhile, in its own order.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range rounds {
			touch := map[string]time.Time{}
			for i := range ents {
				touch[fmt.Sprintf("e%02d", i)] = w.Add(time.Duration(r) * time.Second)
			}
			if err := b.TouchKeys(ctx, touch); err != nil {
				t.Errorf("TouchKeys: %v", err)
				return
			}
			if _, err := b.DeleteKeys(ctx, []string{"nope-z", "nope-a"}); err != nil {
				t.Errorf("DeleteKeys: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	if t.Failed() {
		return
	}
	const n = 4 * rounds
	for i := range ents {
		id := fmt.Sprintf("e%02d", i)
		k, err := a.GetKey(ctx, id)
		if err != nil || k.Spend != 7*n {
			t.Fatalf("key %s spend %v, want %d (%v)", id, k.Spend, 7*n, err)
		}
		u, err := b.GetUser(ctx, id)
		if err != nil || u.Spend != 3*n {
			t.Fatalf("user %s spend %v, want %d (%v)", id, u.Spend, 3*n, err)
		}
		d, err := b.DailySpendFor(ctx, id, "2026-04-01", "2026-04-01")
		if err != nil || len(d) != 1 || d[0].Requests != n {
			t.Fatalf("daily %s = %+v, %v", id, d, err)
		}
	}
}

// TestApplySpendMerging pins the in-Go merging: several deltas of one
// window sum, deltas of a window the reset closes are dropped, and
// repeated daily rows add up, whatever their order in the batch.
func TestApplySpendMerging(t *testing.T) {
	ctx := t.Context()
	s := openFresh(t)
	w1 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	w2 := w1.Add(24 * time.Hour)
	if err := s.CreateKey(ctx, &store.Key{ID: "k", Token: "t", BudgetResetAt: &w1}); err != nil {
		t.Fatal(err)
	}
	err := s.ApplySpend(ctx, store.SpendBatch{
		Deltas: []store.SpendDelta{
			{Kind: store.KindKey, ID: "k", Window: &w2, Amount: 1},
			{Kind: store.KindKey, ID: "k", Window: &w1, Amount: 100},
			{Kind: store.KindKey, ID: "k", Window: &w2, Amount: 2},
			{Kind: store.KindKey, ID: "k", Window: &w2, Amount: 0},
			{Kind: store.KindKey, ID: "k", Window: &w2, Amount: -1}, // refunds are deltas too
		},
		Resets: []store.SpendReset{{Kind: store.KindKey, ID: "k", From: &w1, To: w2}},
		Daily: []store.DailySpend{
			{KeyID: "k", Model: "b", Day: "2026-04-02", Spend: 1, Requests: 1},
			{KeyID: "k", Model: "a", Day: "2026-04-02", Spend: 2, Requests: 1},
			{KeyID: "k", Model: "b", Day: "2026-04-02", Spend: 3, InputTokens: 4, Requests: 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil || k.Spend != 2 || !k.BudgetResetAt.Equal(w2) {
		t.Fatalf("key = spend %d at %v, %v; want 2 at %v", k.Spend, k.BudgetResetAt, err, w2)
	}
	d, err := s.DailySpendFor(ctx, "k", "2026-04-02", "2026-04-02")
	if err != nil || len(d) != 2 || d[0].Model != "a" || d[1].Spend != 4 || d[1].Requests != 2 || d[1].InputTokens != 4 {
		t.Fatalf("daily = %+v, %v", d, err)
	}
}

func BenchmarkEnqueue(b *testing.B) { storetest.BenchEnqueue(b, openFresh(b)) }

// BenchmarkApplySpend: see storetest.BenchApplySpend.
func BenchmarkApplySpend(b *testing.B) { storetest.BenchApplySpend(b, openFresh(b)) }

// BenchmarkClaimDue measures one claim of up to 10 messages from a
// backlog, the outbox worker's poll.
func BenchmarkClaimDue(b *testing.B) {
	s := openFresh(b)
	ctx := context.Background()
	for i := range 2000 {
		if _, err := s.Enqueue(ctx, &store.OutboxMessage{IdempotencyKey: fmt.Sprint(i), Subject: "s"}); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().Add(time.Second)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Leases of 1ns expire at once: the backlog never drains.
		if _, err := s.ClaimDue(ctx, now.Add(time.Duration(i)*time.Microsecond), time.Nanosecond, 10); err != nil {
			b.Fatal(err)
		}
	}
}
