package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmspend/llmspend/fakeupstream"
	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
	"github.com/llmspend/llmspend/store"
)

// metricsGateway is a gateway whose config also serves Caddy's metrics
// handler on a site of its own.
type metricsGateway struct {
	*gateway
	metricsURL string
	port       int
}

func newMetricsGateway(t *testing.T, extra string) *metricsGateway {
	t.Helper()
	g := newGateway(t, extra)
	mg := &metricsGateway{gateway: g, port: freePort(t)}
	mg.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mg.port)
	mg.load()
	return mg
}

// load (re)loads the gateway's Caddyfile plus the metrics site.
func (g *metricsGateway) load() {
	g.t.Helper()
	g.loadText(g.caddyfile() + fmt.Sprintf("http://127.0.0.1:%d {\n\tmetrics\n}\n", g.port))
}

// scrape is one parsed /metrics page.
type scrape map[string]*dto.MetricFamily

func (g *metricsGateway) scrape() scrape {
	g.t.Helper()
	res, err := g.client.Get(g.metricsURL)
	if err != nil {
		g.t.Fatalf("scraping: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		g.t.Fatalf("scrape status %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		g.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// get returns the value of the series of family name whose labels are
// exactly labels ("k=v" pairs); ok is false when there is no such series.
func (s scrape) get(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
	want := append([]string(nil), labels...)
	sort.Strings(want)
	for _, m := range f.GetMetric() {
		var have []string
		for _, lp := range m.GetLabel() {
			have = append(have, lp.GetName()+"="+lp.GetValue())
		}
		sort.Strings(have)
		if strings.Join(have, ",") != strings.Join(want, ",") {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// val is get that treats a missing series as 0 (for deltas).
func (s scrape) val(name string, labels ...string) float64 {
	v, _ := s.get(name, labels...)
	return v
}

// labelValues lists every value of label across family name.
func (s scrape) labelValues(name, label string) []string {
	var out []string
	if f := s[name]; f != nil {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out = append(out, lp.GetValue())
				}
			}
		}
	}
	return out
}

// waitScrape scrapes until cond holds (values read from the store are
// cached for a second, deliveries are asynchronous).
func (g *metricsGateway) waitScrape(what string, cond func(scrape) bool) scrape {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := g.scrape()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMetricsScrapeAfterTraffic(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	g := newMetricsGateway(t, smtpBlock(srv))
	u := fakeupstream.New().Usage // the harness's upstream reports this
	cost := openAICost("gpt-4o-mini", u)
	if cost <= 0 {
		t.Fatal("no reference price for gpt-4o-mini")
	}

	before := g.scrape()
	okKey := g.newKey(map[string]any{"key_alias": "m-ok"})
	tight := g.newKey(map[string]any{"key_alias": "m-tight", "max_budget": (cost / 2).USD()})
	limited := g.newKey(map[string]any{"key_alias": "m-limited", "models": []string{"gpt-4o"}})
	noAlias := g.newKey(nil)
	noAliasLabel := "key_" + tokenHex(hashKey(noAlias))[:8]

	const nOK = 3
	for i := 0; i < nOK; i++ {
		if r := g.chat(okKey, "gpt-4o-mini"); r.Status != 200 {
			t.Fatalf("ok key: %d %s", r.Status, r.Body)
		}
	}
	// The first call is admitted and spends past the budget; the second is refused.
	if r := g.chat(tight, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("tight key, first call: %d %s", r.Status, r.Body)
	}
	if r := g.chat(tight, "gpt-4o-mini"); r.Status != 429 {
		t.Fatalf("tight key, second call: %d %s", r.Status, r.Body)
	}
	if r := g.chat(limited, "gpt-4o-mini"); r.Status != 403 {
		t.Fatalf("model denied: %d %s", r.Status, r.Body)
	}
	if r := g.chat(noAlias, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("key without alias: %d %s", r.Status, r.Body)
	}
	if r := g.chat("sk-not-a-key-at-all", "gpt-4o-mini"); r.Status != 401 {
		t.Fatalf("bad key: %d", r.Status)
	}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Status = 500 })
	if r := g.chat(okKey, "gpt-4o-mini"); r.Status != 500 {
		t.Fatalf("upstream error: %d", r.Status)
	}
	g.upstream.Set(func(s *fakeupstream.Server) { s.Status = 0 })

	// Email: one sent, one refused for good.
	if out := g.mustAdmin("POST", "/email/test", map[string]any{"to": "ops@example.com"}); out["ok"] != true {
		t.Fatalf("email/test: %v", out)
	}
	srv.Reject(smtptest.StageRcpt, 1, 550, "no such mailbox")
	if r := g.admin("POST", "/email/test", map[string]any{"to": "ghost@example.com"}); r.Status != http.StatusBadGateway {
		t.Fatalf("refused email: %d %s", r.Status, r.Body)
	}

	after := g.waitScrape("the outbox counts", func(s scrape) bool {
		return s.val("llmspend_outbox_messages", "status=sent") == 1 && s.val("llmspend_outbox_messages", "status=failed") == 1
	})
	sumCost := func(n int) float64 { // the counter adds each request's USD as a float
		var f float64
		for i := 0; i < n; i++ {
			f += cost.USD()
		}
		return f
	}
	exact := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"llmspend_requests_total", []string{"key_alias=m-ok", "model=gpt-4o-mini", "status=200"}, nOK},
		{"llmspend_requests_total", []string{"key_alias=m-ok", "model=gpt-4o-mini", "status=500"}, 1},
		{"llmspend_tokens_total", []string{"key_alias=m-ok", "model=gpt-4o-mini", "direction=in"}, float64(nOK * u.InputTokens)},
		{"llmspend_tokens_total", []string{"key_alias=m-ok", "model=gpt-4o-mini", "direction=out"}, float64(nOK * u.OutputTokens)},
		{"llmspend_spend_usd_total", []string{"key_alias=m-ok", "model=gpt-4o-mini"}, sumCost(nOK)},

		{"llmspend_requests_total", []string{"key_alias=m-tight", "model=gpt-4o-mini", "status=200"}, 1},
		{"llmspend_requests_total", []string{"key_alias=m-tight", "model=gpt-4o-mini", "status=429"}, 1},
		{"llmspend_budget_rejections_total", []string{"key_alias=m-tight"}, 1},
		{"llmspend_budget_rejections_total", []string{"key_alias=m-ok"}, 0},
		{"llmspend_spend_usd_total", []string{"key_alias=m-tight", "model=gpt-4o-mini"}, sumCost(1)},

		{"llmspend_requests_total", []string{"key_alias=m-limited", "model=gpt-4o-mini", "status=403"}, 1},
		{"llmspend_requests_total", []string{"key_alias=" + noAliasLabel, "model=gpt-4o-mini", "status=200"}, 1},
		{"llmspend_tokens_total", []string{"key_alias=" + noAliasLabel, "model=gpt-4o-mini", "direction=out"}, float64(u.OutputTokens)},

		{"llmspend_outbox_messages", []string{"status=pending"}, 0},
		{"llmspend_outbox_messages", []string{"status=sending"}, 0},
	}
	for _, c := range exact {
		got, ok := after.get(c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := after.get("llmspend_tokens_total", "key_alias=m-tight", "model=gpt-4o-mini", "direction=in"); !ok {
		t.Error("tight key's tokens missing")
	}
	// Counters shared with other tests in the process: compare deltas.
	deltas := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"llmspend_requests_total", []string{"key_alias=", "model=", "status=401"}, 1},
		// The tight key's one charge crossed its max-budget alert point.
		{"llmspend_alert_crossings_total", []string{"type=max_budget"}, 1},
		{"llmspend_emails_total", []string{"backend=smtp", "result=queued"}, 2},
		{"llmspend_emails_total", []string{"backend=smtp", "result=sent"}, 1},
		{"llmspend_emails_total", []string{"backend=smtp", "result=failed"}, 1},
	}
	for _, c := range deltas {
		if d := after.val(c.name, c.labels...) - before.val(c.name, c.labels...); d != c.want {
			t.Errorf("%s%v rose by %v, want %v", c.name, c.labels, d, c.want)
		}
	}
	// No key material in any label value.
	for _, k := range []string{okKey, tight, limited, noAlias} {
		tok := tokenHex(hashKey(k))
		for _, name := range []string{"llmspend_requests_total", "llmspend_tokens_total", "llmspend_spend_usd_total", "llmspend_budget_rejections_total"} {
			for _, v := range after.labelValues(name, "key_alias") {
				if strings.Contains(v, k[3:]) || strings.Contains(v, tok[8:]) || strings.HasPrefix(v, "sk-") {
					t.Errorf("%s key_alias %q leaks key material", name, v)
				}
			}
		}
	}
	// The write-behind empties within a flush interval or two.
	g.waitScrape("the ledger flush", func(s scrape) bool {
		p, ok1 := s.get("llmspend_ledger_pending_accounts")
		r, ok2 := s.get("llmspend_ledger_retry_rows")
		return ok1 && ok2 && p == 0 && r == 0
	})
	// Caddy's own series are still there next to ours.
	if after["caddy_config_last_reload_successful"] == nil {
		t.Error("caddy's metrics missing from the page")
	}
}

func TestMetricsSurviveReload(t *testing.T) {
	g := newMetricsGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "m-reload"})
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	series := []string{"key_alias=m-reload", "model=gpt-4o-mini", "status=200"}
	if v := g.scrape().val("llmspend_requests_total", series...); v != 1 {
		t.Fatalf("before reload: %v", v)
	}
	// Each reload builds a new registry and registers the same collectors.
	for i := 0; i < 3; i++ {
		g.load()
	}
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("chat after reload: %d %s", r.Status, r.Body)
	}
	s := g.scrape()
	if v := s.val("llmspend_requests_total", series...); v != 2 {
		t.Fatalf("after reloads: requests %v, want 2 (counts carry across reloads)", v)
	}
	if _, ok := s.get("llmspend_outbox_messages", "status=pending"); !ok {
		t.Fatal("outbox gauge missing after reload")
	}
	// A full restart too (new shared state, same collectors).
	g.restart()
	g.load()
	if v := g.scrape().val("llmspend_requests_total", series...); v != 2 {
		t.Fatalf("after restart: %v", v)
	}
}

func TestRegisterMetricsTwiceAndNil(t *testing.T) {
	if err := registerMetrics(nil); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	for i := 0; i < 2; i++ { // two llm_spend handlers in one config
		if err := registerMetrics(reg); err != nil {
			t.Fatalf("registration %d: %v", i, err)
		}
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("gather: %v", err)
	}
	// A foreign collector with a clashing name is a real error.
	clash := prometheus.NewPedanticRegistry()
	clash.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "llmspend_requests_total", Help: "x"}))
	if err := registerMetrics(clash); err == nil {
		t.Fatal("clashing collector accepted")
	}
}

// testKey is a cached key with an alias (or none) and a token.
func testKey(alias, plain string) *cachedKey {
	return newCachedKey(store.Key{ID: "id-" + plain, KeyAlias: alias, Token: tokenHex(hashKey(plain))})
}

func gather(t *testing.T, m *gatewayMetrics) scrape {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.collectors() {
		reg.MustRegister(c)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := scrape{}
	for _, f := range fams {
		s[f.GetName()] = f
	}
	return s
}

func TestMetricsCardinalityBounds(t *testing.T) {
	m := newGatewayMetrics()
	prices := spend.DefaultPrices()
	for i := 0; i < maxAliasLabels+50; i++ {
		m.forKey(testKey(fmt.Sprintf("alias-%d", i), fmt.Sprintf("sk-%d", i)), "gpt-4o", prices).request(200)
	}
	for i := 0; i < maxUnknownModels+20; i++ {
		m.forKey(testKey("alias-0", "sk-0"), fmt.Sprintf("made-up-model-%d", i), prices).request(200)
	}
	// A known model is never folded, however many unknown ones came first.
	m.forKey(testKey("alias-0", "sk-0"), "claude-sonnet-4-20250514", prices).request(200)
	s := gather(t, m)

	aliases := map[string]bool{}
	models := map[string]bool{}
	for _, mm := range s["llmspend_requests_total"].GetMetric() {
		for _, lp := range mm.GetLabel() {
			switch lp.GetName() {
			case "key_alias":
				aliases[lp.GetValue()] = true
			case "model":
				models[lp.GetValue()] = true
			}
		}
	}
	if len(aliases) != maxAliasLabels+1 || !aliases[otherLabel] {
		t.Fatalf("%d alias labels (other: %v), want %d + other", len(aliases), aliases[otherLabel], maxAliasLabels)
	}
	if v := s.val("llmspend_requests_total", "key_alias=other", "model=gpt-4o", "status=200"); v != 50 {
		t.Fatalf("overflow aliases counted %v times under other, want 50", v)
	}
	// gpt-4o and claude (known) + 100 unknown + other.
	if len(models) != maxUnknownModels+3 || !models[otherLabel] || !models["claude-sonnet-4-20250514"] {
		t.Fatalf("%d model labels: other %v", len(models), models[otherLabel])
	}
	if v := s.val("llmspend_requests_total", "key_alias=alias-0", "model=other", "status=200"); v != 20 {
		t.Fatalf("overflow models under other: %v, want 20", v)
	}
}

func TestMetricsKeyLabelsAndCounts(t *testing.T) {
	m := newGatewayMetrics()
	prices := spend.DefaultPrices()
	ck := testKey("", "sk-secret-plain-key-0001")
	set := m.forKey(ck, "gpt-4o", prices)
	if m.forKey(ck, "gpt-4o", prices) != set {
		t.Fatal("label set not cached")
	}
	set.request(200)
	set.request(200)
	set.request(502)
	set.billed(100, 50, money.FromUSD(0.25))
	set.billed(1, 2, money.FromUSD(0.5))
	set.budgetRejected()
	m.unauthenticatedRequest(401)

	s := gather(t, m)
	label := "key_alias=key_" + ck.key.Token[:8]
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"llmspend_requests_total", []string{label, "model=gpt-4o", "status=200"}, 2},
		{"llmspend_requests_total", []string{label, "model=gpt-4o", "status=502"}, 1},
		{"llmspend_requests_total", []string{label, "model=gpt-4o", "status=429"}, 1},
		{"llmspend_requests_total", []string{"key_alias=", "model=", "status=401"}, 1},
		{"llmspend_tokens_total", []string{label, "model=gpt-4o", "direction=in"}, 101},
		{"llmspend_tokens_total", []string{label, "model=gpt-4o", "direction=out"}, 52},
		{"llmspend_spend_usd_total", []string{label, "model=gpt-4o"}, 0.75},
		{"llmspend_budget_rejections_total", []string{label}, 1},
	} {
		if got, ok := s.get(c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

func TestAlertAndEmailMetrics(t *testing.T) {
	m := gwMetrics()
	before := gather(t, m)
	a := gatewayAlertMetrics()
	// The ledger's sink counts every crossing, alerting on or off.
	sink := new(sinkSwitch)
	sink.Crossing(spend.Crossing{AlertType: spend.AlertSoftBudget})
	sink.Crossing(spend.Crossing{AlertType: spend.AlertSoftBudget})
	sink.Crossing(spend.Crossing{AlertType: spend.AlertMaxBudget})
	a.Suppressed(spend.AlertMaxBudget, "claim")
	a.Enqueued(spend.AlertSoftBudget)
	a.NoRecipient(spend.AlertMaxBudget)
	a.Error(spend.AlertMaxBudget)
	a.Overflow()
	e := gatewayEmailMetrics()
	e.Retried("resend")
	e.QueueFull("resend")
	after := gather(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"llmspend_alert_crossings_total", []string{"type=soft_budget"}, 2},
		{"llmspend_alert_crossings_total", []string{"type=max_budget"}, 1},
		{"llmspend_alert_suppressions_total", []string{"type=max_budget", "reason=claim"}, 1},
		{"llmspend_alert_emails_total", []string{"type=soft_budget", "result=enqueued"}, 1},
		{"llmspend_alert_emails_total", []string{"type=max_budget", "result=no_recipient"}, 1},
		{"llmspend_alert_emails_total", []string{"type=max_budget", "result=error"}, 1},
		{"llmspend_alert_overflows_total", nil, 1},
		{"llmspend_emails_total", []string{"backend=resend", "result=retried"}, 1},
		{"llmspend_emails_total", []string{"backend=resend", "result=queue_full"}, 1},
	} {
		if d := after.val(c.name, c.labels...) - before.val(c.name, c.labels...); d != c.want {
			t.Errorf("%s%v rose by %v, want %v", c.name, c.labels, d, c.want)
		}
	}
	// Alert types are bounded too.
	fresh := newGatewayMetrics()
	fa := alertMetrics{fresh}
	for i := 0; i < maxAlertTypes+5; i++ {
		fa.Crossed(fmt.Sprintf("t%d", i))
	}
	if v := gather(t, fresh).val("llmspend_alert_crossings_total", "type=other"); v != 5 {
		t.Fatalf("overflow alert types: %v", v)
	}
}

// The request path's counting must not allocate once a key's label set
// is cached.
func TestMetricsHotPathAllocs(t *testing.T) {
	m := newGatewayMetrics()
	prices := spend.DefaultPrices()
	ck := testKey("", "sk-alloc-test")
	m.forKey(ck, "gpt-4o", prices).request(200)
	allocs := testing.AllocsPerRun(1000, func() {
		s := m.forKey(ck, "gpt-4o", prices)
		s.request(200)
		s.billed(23, 41, 12345)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request", allocs)
	}
}

// BenchmarkMetricsCount is what the metrics add to a billed request.
func BenchmarkMetricsCount(b *testing.B) {
	m := newGatewayMetrics()
	prices := spend.DefaultPrices()
	ck := testKey("team-a", "sk-bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := m.forKey(ck, "gpt-4o-mini", prices)
			s.request(200)
			s.billed(23, 41, 12345)
		}
	})
}

// chatResponse is an upstream chat completion with a usage block.
var chatResponse = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Gateways hum softly"},"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":12,"total_tokens":37}}`)

var nextChat = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(chatResponse)
	return err
})

// BenchmarkMeteredJSON is the full request path of a billed non-streaming
// call: auth, inspect, reserve, meter the response, commit (and, with
// metrics, count it).
func BenchmarkMeteredJSON(b *testing.B) {
	h, plain := benchHandler(b)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about gateways."}],"max_tokens":200}`)
	auth := "Bearer " + plain
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		if err := h.ServeHTTP(w, req, nextChat); err != nil {
			b.Fatal(err)
		}
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
