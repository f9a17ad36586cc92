package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmspend/llmspend/alerts"
	"github.com/llmspend/llmspend/fakeupstream"
	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/store"
)

// Each gpt-4o-mini request below costs 1000 × 0.15 + 1000 × 0.60 per 1M
// tokens = $0.00075: with soft_budget 0.001 and max_budget 0.002 the
// second request crosses the soft budget ($0.0015), the third the 80%
// alert point ($0.0016) and the budget itself ($0.00225), the fourth gets 429.
var alertUsage = fakeupstream.Usage{InputTokens: 1000, OutputTokens: 1000}

// alertSMTPBlock is smtpBlock with more attempts, so a server that is
// down for a while cannot exhaust them.
func alertSMTPBlock(s *smtptest.Server) string {
	return fmt.Sprintf("email smtp {\n\t\t\tsmtp_host %s\n\t\t\tsmtp_port %d\n\t\t\tsmtp_tls False\n\t\t\tfrom llmspend@example.com\n\t\t\tbase_backoff 50ms\n\t\t\tmax_attempts 30\n\t\t}", s.Host(), s.Port())
}

func newAlertGateway(t *testing.T, alertsBlock string) (*gateway, *smtptest.Server) {
	t.Helper()
	srv := smtptest.Start(t, smtptest.Options{})
	if alertsBlock == "" {
		alertsBlock = "alerts email"
	}
	g := newGateway(t, alertSMTPBlock(srv)+"\n\t\t"+alertsBlock)
	g.upstream.Set(func(s *fakeupstream.Server) { s.Usage = alertUsage })
	return g, srv
}

// alerter returns the running gateway's alerter (the ledger's sink).
func (g *gateway) alerter() *alerts.Alerter {
	g.t.Helper()
	var al *alerts.Alerter
	states.Range(func(k, v any) bool {
		if k.(stateConfig).store == g.dbPath {
			if p := v.(*sharedState).sink.cur.Load(); p != nil {
				al, _ = (*p).(*alerts.Alerter)
			}
			return false
		}
		return true
	})
	if al == nil {
		g.t.Fatal("no alerter installed")
	}
	return al
}

// settleAlerts waits until the alerter has decided about every crossing.
func (g *gateway) settleAlerts() alerts.Stats {
	g.t.Helper()
	al := g.alerter()
	var s alerts.Stats
	waitUntil(g.t, func() bool {
		s = al.Stats()
		return s.QueueLen == 0 && s.Enqueued+s.SuppressedCache+s.SuppressedClaim+s.NoRecipient+s.Gone+s.Errors >= s.Received
	})
	return s
}

// quiet asserts that the SMTP server holds exactly n messages, after
// giving stray deliveries time to show up.
func quiet(t *testing.T, g *gateway, srv *smtptest.Server, n int) {
	t.Helper()
	g.settleAlerts()
	time.Sleep(300 * time.Millisecond)
	if c := srv.Count(); c != n {
		for i, m := range srv.Messages() {
			t.Logf("message %d: %s", i+1, parseMail(t, m.Data).Subject)
		}
		t.Fatalf("%d emails, want %d", c, n)
	}
}

func (g *gateway) alertUser(id, email string) {
	g.t.Helper()
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": id, "user_email": email, "auto_create_key": false, "send_invite_email": false})
}

func TestBudgetAlertsEndToEnd(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "key_alias": "billing-prod", "soft_budget": 0.001, "max_budget": 0.002})

	for i := range 2 {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	rcv, soft := receive(t, srv, 1)
	if soft.Subject != "LiteLLM: Soft Budget Crossed - Total Soft Budget: $0.001" || len(rcv.To) != 1 || rcv.To[0] != "owner@example.com" {
		t.Fatalf("soft alert: %q to %v", soft.Subject, rcv.To)
	}
	mustContain(t, "soft alert text", soft.Text, "$0.0015", "$0.001", "$0.002", "billing-prod")
	mustContain(t, "soft alert html", soft.HTML, "$0.0015", "billing-prod")

	// A restart inside the TTL, with spend past the soft budget: the
	// reloaded ledger reports the soft crossing again on the next charge,
	// and the store's claim suppresses it. The same charge crosses 80%.
	g.restart()
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("request 3: %d %s", r.Status, r.Body)
	}
	rcv, mx := receive(t, srv, 2)
	if mx.Subject != "LiteLLM: Max Budget Alert - 80% of Maximum Budget Reached" || rcv.To[0] != "owner@example.com" {
		t.Fatalf("max alert: %q to %v", mx.Subject, rcv.To)
	}
	mustContain(t, "max alert text", mx.Text, "$0.00225", "$0.002", "$0.0016", "80%")
	if s := g.settleAlerts(); s.SuppressedClaim != 1 || s.Enqueued != 1 {
		t.Fatalf("after restart: %+v", s)
	}

	// Budget exhausted: 429, and no more alerts.
	for i := range 3 {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != http.StatusTooManyRequests {
			t.Fatalf("request %d after exhaustion: %d", i+4, r.Status)
		}
	}
	quiet(t, g, srv, 2)

	g.restart()
	if r := g.chat(key, "gpt-4o-mini"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("after restart: %d", r.Status)
	}
	quiet(t, g, srv, 2)

	recs, err := g.store().ListAlerts(context.Background(), store.KindKey, "")
	if err != nil || len(recs) != 2 {
		t.Fatalf("claims %+v %v", recs, err)
	}
	for _, o := range g.outbox() {
		if o.Status != store.StatusSent || !strings.HasPrefix(o.IdempotencyKey, "budget-alert.") {
			t.Fatalf("outbox row %d: %s %q", o.ID, o.Status, o.IdempotencyKey)
		}
	}
}

// A budget_duration reset re-arms both alerts, which fire once more.
func TestBudgetAlertsRearmAfterReset(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.001, "max_budget": 0.002, "budget_duration": "2s"})
	run := func(round int) {
		for i := range 3 {
			if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
				t.Fatalf("round %d request %d: %d %s", round, i+1, r.Status, r.Body)
			}
		}
		if r := g.chat(key, "gpt-4o-mini"); r.Status != http.StatusTooManyRequests {
			t.Fatalf("round %d: budget not exhausted: %d", round, r.Status)
		}
	}
	run(1)
	receive(t, srv, 2)
	quiet(t, g, srv, 2)

	info := g.mustAdmin("GET", "/key/info?key="+key, nil)["info"].(map[string]any)
	resetAt, err := time.Parse(time.RFC3339Nano, info["budget_reset_at"].(string))
	if err != nil {
		t.Fatalf("budget_reset_at %v: %v", info["budget_reset_at"], err)
	}
	time.Sleep(time.Until(resetAt) + 50*time.Millisecond)
	run(2)
	receive(t, srv, 4)
	quiet(t, g, srv, 4)
	subjects := map[string]int{}
	for _, m := range srv.Messages() {
		subjects[parseMail(t, m.Data).Subject]++
	}
	if subjects["LiteLLM: Soft Budget Crossed - Total Soft Budget: $0.001"] != 2 || subjects["LiteLLM: Max Budget Alert - 80% of Maximum Budget Reached"] != 2 {
		t.Fatalf("subjects %v", subjects)
	}
}

// 100 requests in flight cross the soft budget together: one email.
func TestBudgetAlertsConcurrentOneEmail(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	// 100 × $0.00075 = $0.075; the soft budget is crossed by the 40th.
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.03})
	g.upstream.Set(func(s *fakeupstream.Server) { s.Latency = 20 * time.Millisecond; s.Record = false })
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	start := make(chan struct{})
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := g.chat(key, "gpt-4o-mini")
			mu.Lock()
			codes[r.Status]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if codes[200] != 100 {
		t.Fatalf("status codes %v", codes)
	}
	receive(t, srv, 1)
	quiet(t, g, srv, 1)
}

// The SMTP server is down when the budget is crossed: the alert waits in
// the outbox and arrives once the server is back, once.
func TestBudgetAlertsSMTPDown(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.001})
	srv.Down()
	for range 2 {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	// Wait for a failed attempt on the queued alert.
	waitUntil(t, func() bool {
		for _, o := range g.outbox() {
			if o.Kind == "soft_budget" && o.Attempts >= 1 && o.LastError != "" && o.Status != store.StatusSent {
				return true
			}
		}
		return false
	})
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	rcv, m := receive(t, srv, 1)
	if !strings.HasPrefix(m.Subject, "LiteLLM: Soft Budget Crossed") || rcv.To[0] != "owner@example.com" {
		t.Fatalf("%q %v", m.Subject, rcv.To)
	}
	quiet(t, g, srv, 1)
}

// User budgets (/user/new with max_budget and soft_budget) alert the user.
func TestBudgetAlertsUserBudget(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	out := g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "ada", "user_email": "ada@example.com", "max_budget": 0.002, "soft_budget": 0.001, "send_invite_email": false})
	key, _ := out["key"].(string)
	if key == "" {
		t.Fatalf("no key: %v", out)
	}
	for range 3 {
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	if r := g.chat(key, "gpt-4o-mini"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("user budget not enforced: %d", r.Status)
	}
	receive(t, srv, 2)
	quiet(t, g, srv, 2)
	var subjects []string
	for _, rm := range srv.Messages() {
		if len(rm.To) != 1 || rm.To[0] != "ada@example.com" {
			t.Fatalf("recipients %v", rm.To)
		}
		m := parseMail(t, rm.Data)
		mustContain(t, "user alert", m.Text, "Your account")
		subjects = append(subjects, m.Subject)
	}
	sort.Strings(subjects)
	if subjects[0] != "LiteLLM: Max Budget Alert - 80% of Maximum Budget Reached" || subjects[1] != "LiteLLM: Soft Budget Crossed - Total Soft Budget: $0.001" {
		t.Fatalf("subjects %q", subjects)
	}
	if recs, _ := g.store().ListAlerts(context.Background(), store.KindUser, "ada"); len(recs) != 2 {
		t.Fatalf("user claims %+v", recs)
	}
}

// Per-key thresholds replace the default 80% alert; the owner is always
// a recipient, and 100 fires on the request that exhausts the budget.
func TestBudgetAlertsPerKeyThresholds(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "max_budget": 0.003, "metadata": map[string]any{
		"max_budget_alert_emails": map[string]any{
			"50":  []string{"fin@example.com"},
			"75":  "fin@example.com, cto@example.com",
			"100": []string{"oncall@example.com", "OWNER@example.com"},
		},
	}})
	for i := range 4 { // $0.00075, $0.0015 (50%), $0.00225 (75%), $0.003 (100%)
		if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	if r := g.chat(key, "gpt-4o-mini"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("not exhausted: %d", r.Status)
	}
	receive(t, srv, 3)
	quiet(t, g, srv, 3)
	got := map[string]string{}
	for _, rm := range srv.Messages() {
		to := append([]string(nil), rm.To...)
		sort.Strings(to)
		got[parseMail(t, rm.Data).Subject] = strings.Join(to, ",")
	}
	want := map[string]string{
		"LiteLLM: Max Budget Alert - 50% of Maximum Budget Reached":  "fin@example.com,owner@example.com",
		"LiteLLM: Max Budget Alert - 75% of Maximum Budget Reached":  "cto@example.com,fin@example.com,owner@example.com",
		"LiteLLM: Max Budget Alert - 100% of Maximum Budget Reached": "oncall@example.com,owner@example.com",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alerts\n got %v\nwant %v", got, want)
	}
}

func TestBudgetAlertsInvalidMetadata(t *testing.T) {
	g := newGateway(t, "")
	bad := []any{
		[]string{"a@example.com"},
		map[string]any{"0": []string{"a@example.com"}},
		map[string]any{"101": []string{"a@example.com"}},
		map[string]any{"eighty": []string{"a@example.com"}},
		map[string]any{"80": []string{"not-an-email"}},
		map[string]any{"80": 42},
		map[string]any{"80": "a@example.com\r\nBcc: evil@example.com"},
	}
	for _, v := range bad {
		r := g.admin("POST", "/key/generate", map[string]any{"metadata": map[string]any{"max_budget_alert_emails": v}})
		if r.Status != http.StatusBadRequest {
			t.Fatalf("generate with %v: %d %s", v, r.Status, r.Body)
		}
		if e := errorBody(t, r); e.Param == nil || *e.Param != "metadata" || !strings.Contains(e.Message, "max_budget_alert_emails") {
			t.Fatalf("error %+v", e)
		}
	}
	key := g.newKey(map[string]any{"metadata": map[string]any{"max_budget_alert_emails": map[string]any{"50": "a@example.com, b@example.com"}}})
	for _, v := range bad {
		r := g.admin("POST", "/key/update", map[string]any{"key": key, "metadata": map[string]any{"max_budget_alert_emails": v}})
		if r.Status != http.StatusBadRequest {
			t.Fatalf("update with %v: %d %s", v, r.Status, r.Body)
		}
	}
	g.mustAdmin("POST", "/key/update", map[string]any{"key": key, "metadata": map[string]any{"max_budget_alert_emails": map[string]any{"100": []string{"c@example.com"}}}})
}

func TestBudgetAlertsConfig(t *testing.T) {
	// The Caddyfile sets the percentage; the ledger follows it.
	g, srv := newAlertGateway(t, "alerts email {\n\t\t\tmax_spend_alert_percentage 0.5\n\t\t\tttl 1h\n\t\t\tqueue 16\n\t\t}")
	if p := g.stateOf().ledger.MaxAlertPercent(); p != 50 {
		t.Fatalf("ledger alert percent %d", p)
	}
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "max_budget": 0.002})
	for range 2 { // $0.0015 >= 50% of $0.002
		g.chat(key, "gpt-4o-mini")
	}
	_, m := receive(t, srv, 1)
	if m.Subject != "LiteLLM: Max Budget Alert - 50% of Maximum Budget Reached" {
		t.Fatalf("subject %q", m.Subject)
	}

	// The environment variable is validated and named.
	with := func(block string) string {
		old := g.extra
		g.extra = alertSMTPBlock(srv) + "\n\t\t" + block
		defer func() { g.extra = old }()
		return g.caddyfile()
	}
	t.Setenv(envAlertPct, "1.5")
	if err := loadErr(with("alerts email")); err == nil || !strings.Contains(err.Error(), envAlertPct) {
		t.Fatalf("bad env percentage: %v", err)
	}
	t.Setenv(envAlertPct, "0.9")
	t.Setenv(envAlertTTL, "soon")
	if err := loadErr(with("alerts email")); err == nil || !strings.Contains(err.Error(), envAlertTTL) {
		t.Fatalf("bad env ttl: %v", err)
	}
	t.Setenv(envAlertTTL, "60")
	g.loadText(with("alerts email"))
	if p := g.stateOf().ledger.MaxAlertPercent(); p != 90 {
		t.Fatalf("ledger alert percent from the environment: %d", p)
	}
	for _, bad := range []string{"alerts", "alerts sms", "alerts email {\n max_spend_alert_percentage 0\n}",
		"alerts email {\n ttl -1s\n}", "alerts email {\n queue 0\n}", "alerts email {\n bogus 1\n}"} {
		if err := loadErr(with(bad)); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	// The running config survived the failed loads.
	if r := g.admin("GET", "/key/list", nil); r.Status != 200 {
		t.Fatalf("gateway after failed loads: %d", r.Status)
	}
}

func TestAlertSettingsDefaults(t *testing.T) {
	s, err := (&AlertsConfig{Email: true}).settings(func(string) string { return "" })
	if err != nil || s.pct != 0.8 || s.ttl != 24*time.Hour || s.queue != 4096 {
		t.Fatalf("%+v %v", s, err)
	}
	env := map[string]string{envAlertPct: "0.6", envAlertTTL: "120"}
	s, err = (&AlertsConfig{Email: true}).settings(func(k string) string { return env[k] })
	if err != nil || s.pct != 0.6 || s.ttl != 2*time.Minute {
		t.Fatalf("%+v %v", s, err)
	}
	pct := 0.7
	s, _ = (&AlertsConfig{Email: true, MaxSpendAlertPercentage: &pct}).settings(func(k string) string { return env[k] })
	if s.pct != 0.7 {
		t.Fatalf("Caddyfile does not win: %+v", s)
	}
	for _, v := range []string{"0", "-0.1", "1.01", "abc", "NaN"} {
		env[envAlertPct] = v
		if _, err := (&AlertsConfig{Email: true}).settings(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), envAlertPct) {
			t.Fatalf("%q: %v", v, err)
		}
	}
}

// A reload installs the new config's alerter before the old config's
// cleanup runs: the old cleanup must not unset it, and alerts keep coming.
func TestBudgetAlertsSurviveReload(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.001, "max_budget": 0.002})
	before := g.alerter()
	g.load()
	after := g.alerter()
	if after == before {
		t.Fatal("reload kept the old alerter")
	}
	for range 3 {
		g.chat(key, "gpt-4o-mini")
	}
	receive(t, srv, 2)
	quiet(t, g, srv, 2)
	// A config without alerts removes the sink.
	g.loadText(strings.Replace(g.caddyfile(), "alerts email", "", 1))
	if p := g.stateOf().sink.cur.Load(); p != nil {
		t.Fatal("alerts still on after a config without them")
	}
}

// An alert email the server refuses for good releases its claim (the
// failed-email sweep), so it can fire again on a later crossing.
func TestBudgetAlertsPermanentFailureReleasesClaim(t *testing.T) {
	g, srv := newAlertGateway(t, "alerts email {\n\t\t\tfailed_sweep 100ms\n\t\t}")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.001})
	srv.Reject(smtptest.StageRcpt, 1, 550, "no such mailbox")
	for range 2 {
		g.chat(key, "gpt-4o-mini")
	}
	waitUntil(t, func() bool {
		for _, o := range g.outbox() {
			if o.Kind == "soft_budget" && o.Status == store.StatusFailed {
				return true
			}
		}
		return false
	})
	waitUntil(t, func() bool {
		recs, _ := g.store().ListAlerts(context.Background(), store.KindKey, "")
		return len(recs) == 0
	})
	if s := g.alerter().Stats(); s.Released != 1 {
		t.Fatalf("%+v", s)
	}
	// A restart re-fires the crossing on the next charge: now it is sent.
	g.restart()
	g.chat(key, "gpt-4o-mini")
	receive(t, srv, 1)
	quiet(t, g, srv, 1)
}

// stateOf returns the running gateway's shared state.
func (g *gateway) stateOf() *sharedState {
	g.t.Helper()
	var st *sharedState
	states.Range(func(k, v any) bool {
		if k.(stateConfig).store == g.dbPath {
			st = v.(*sharedState)
			return false
		}
		return true
	})
	if st == nil {
		g.t.Fatal("no shared state")
	}
	return st
}

// A config that fails to load after it provisioned (here: a handler after
// llm_spend fails) must leave the running config's alerter in place.
func TestBudgetAlertsFailedReloadKeepsAlerter(t *testing.T) {
	g, srv := newAlertGateway(t, "")
	g.alertUser("owner", "owner@example.com")
	key := g.newKey(map[string]any{"user_id": "owner", "soft_budget": 0.001})
	before := g.alerter()
	cf := strings.Replace(g.caddyfile(), "header_up x-api-key sk-upstream-real-anthropic",
		"header_up x-api-key sk-upstream-real-anthropic\n\t\t\ttransport http {\n\t\t\t\ttls_client_auth /nonexistent/c.crt /nonexistent/c.key\n\t\t\t}", 1)
	cf = strings.Replace(cf, "reverse_proxy "+g.upURL, "reverse_proxy "+strings.Replace(g.upURL, "http://", "https://", 1), 1)
	cf = strings.Replace(cf, "alerts email", "alerts email {\n\t\t\tmax_spend_alert_percentage 0.5\n\t\t}", 1)
	err := loadErr(cf)
	if err == nil {
		t.Fatal("broken config loaded")
	}
	t.Logf("load error: %v", err)
	if g.alerter() != before {
		t.Fatal("a failed reload replaced the running alerter")
	}
	if p := g.stateOf().ledger.MaxAlertPercent(); p != 80 {
		t.Fatalf("a failed reload left the alert percent at %d", p)
	}
	for range 2 {
		g.chat(key, "gpt-4o-mini")
	}
	receive(t, srv, 1)
	quiet(t, g, srv, 1)
}
