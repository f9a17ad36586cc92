package caddymodule

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmspend/llmspend/alerts"
	"github.com/llmspend/llmspend/mailer"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
)

// Prometheus metrics, shown at Caddy's /metrics when the user enables the
// `metrics` handler. The collectors are created once per process and
// counted into whether or not a registry shows them: Caddy builds a fresh
// registry on every config load, and each load registers the same
// collectors into it (registerMetrics), so counts carry across reloads.
//
// Label values never hold key IDs or key material: a key is labelled by its
// alias, or by "key_" and the first 8 hex digits of its SHA-256 token when
// it has none. Cardinality is bounded: past maxAliasLabels aliases, and
// past maxUnknownModels model names missing from the price table, new
// values are counted under "other".

const (
	metricsNamespace = "llmspend"

	maxAliasLabels   = 1000
	maxUnknownModels = 100
	maxAlertTypes    = 16
	maxEmailBackends = 16
	// maxSeriesCache bounds the hot-path cache of label sets by raw
	// (alias, model); past it look-ups take the locked path every time.
	maxSeriesCache = 50_000

	otherLabel = "other"

	// outboxCacheTTL is how long a scrape reuses outbox counts: several
	// scrapers, or a scrape storm, cost one query per second.
	outboxCacheTTL = time.Second
)

// gatewayMetrics holds the collectors and the label-set caches.
type gatewayMetrics struct {
	requests          *prometheus.CounterVec // key_alias, model, status
	tokens            *prometheus.CounterVec // key_alias, model, direction
	spendUSD          *prometheus.CounterVec // key_alias, model
	budgetRejections  *prometheus.CounterVec // key_alias
	alertCrossings    *prometheus.CounterVec // type
	alertSuppressions *prometheus.CounterVec // type, reason
	alertEmails       *prometheus.CounterVec // type, result
	alertOverflows    prometheus.Counter
	emails            *prometheus.CounterVec // backend, result
	state             *stateCollector

	unauthenticated statusCounters // key_alias="" model=""

	mu      sync.RWMutex
	series  map[seriesKey]*seriesSet // raw (alias, token prefix, model) -> labels
	byLabel map[[2]string]*seriesSet // (key_alias, model) label values
	aliases map[string]prometheus.Counter
	models  map[string]struct{} // unknown model names admitted as labels

	alertTypes    boundedLabels
	alertReasons  boundedLabels
	emailBackends boundedLabels
}

var gwMetrics = sync.OnceValue(newGatewayMetrics)

func newGatewayMetrics() *gatewayMetrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	}
	m := &gatewayMetrics{
		requests: counter("requests_total",
			"Gateway requests by key alias, requested model and response status. Unauthenticated requests have empty key_alias and model.",
			"key_alias", "model", "status"),
		tokens: counter("tokens_total",
			"Tokens of billed responses: direction=in counts every prompt token (cached and cache writes included), out counts completion tokens.",
			"key_alias", "model", "direction"),
		spendUSD: counter("spend_usd_total",
			"Spend charged to keys in USD (each request's exact cost, summed as a float).",
			"key_alias", "model"),
		budgetRejections: counter("budget_rejections_total",
			"Requests refused with 429 because the key's or its user's budget is spent.",
			"key_alias"),
		alertCrossings: counter("alert_crossings_total",
			"Budget alert thresholds crossed, by alert type.",
			"type"),
		alertSuppressions: counter("alert_suppressions_total",
			"Budget alert crossings that sent nothing because the alert was already sent for the window, by alert type and where the duplicate was caught (cache or claim).",
			"type", "reason"),
		alertEmails: counter("alert_emails_total",
			"Budget alerts handled, by alert type and result: enqueued (email in the outbox), no_recipient, error.",
			"type", "result"),
		alertOverflows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "alert_overflows_total",
			Help: "Budget crossings that found the alert queue full and waited on the overflow list."}),
		emails: counter("emails_total",
			"Email deliveries by backend and result: queued (committed to the outbox), sent, failed (final), retried (transient failure), queue_full (the poller takes over).",
			"backend", "result"),
		state:   newStateCollector(),
		series:  make(map[seriesKey]*seriesSet),
		byLabel: make(map[[2]string]*seriesSet),
		aliases: make(map[string]prometheus.Counter),
		models:  make(map[string]struct{}),
	}
	m.unauthenticated.vec = m.requests
	m.unauthenticated.labels = [2]string{"", ""}
	m.alertTypes = boundedLabels{max: maxAlertTypes}
	m.alertReasons = boundedLabels{max: maxAlertTypes}
	m.emailBackends = boundedLabels{max: maxEmailBackends}
	return m
}

func (m *gatewayMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.tokens, m.spendUSD, m.budgetRejections,
		m.alertCrossings, m.alertSuppressions, m.alertEmails, m.alertOverflows, m.emails, m.state}
}

// registerMetrics adds the collectors to a config's registry. A nil
// registry (metrics off) is skipped; a collector already in it (a second
// llm_spend handler in the same config) is fine.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range gwMetrics().collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// seriesKey identifies a key and model as the handler sees them, before
// any label is built: building "key_"+prefix would allocate per request.
type seriesKey struct {
	alias  string // KeyAlias, or "" when the key has none
	prefix string // first 8 hex digits of the token when alias is ""
	model  string
}

// seriesSet is every counter of one (key_alias, model) label pair, curried
// once so the request path only looks up a map and adds.
type seriesSet struct {
	in, out, usd prometheus.Counter
	budget       prometheus.Counter // budget_rejections_total{key_alias}
	statuses     statusCounters
}

// statusCounters caches requests_total children by status code; the list
// is copied on write (a handful of codes per series), so reads take no lock.
type statusCounters struct {
	vec    *prometheus.CounterVec
	labels [2]string
	mu     sync.Mutex
	codes  atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func (s *statusCounters) inc(code int) {
	if p := s.codes.Load(); p != nil {
		for _, cc := range *p {
			if cc.code == code {
				cc.c.Inc()
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []codeCounter
	if p := s.codes.Load(); p != nil {
		list = *p
		for _, cc := range list {
			if cc.code == code {
				cc.c.Inc()
				return
			}
		}
	}
	c := s.vec.WithLabelValues(s.labels[0], s.labels[1], strconv.Itoa(code))
	next := append(append(make([]codeCounter, 0, len(list)+1), list...), codeCounter{code, c})
	s.codes.Store(&next)
	c.Inc()
}

// forKey returns the counters of a key and a requested model. prices
// decides whether an unseen model name is known (uncapped) or not.
func (m *gatewayMetrics) forKey(ck *cachedKey, model string, prices *spend.PriceTable) *seriesSet {
	k := seriesKey{alias: ck.key.KeyAlias, model: model}
	if k.alias == "" {
		k.prefix = ck.key.Token
		if len(k.prefix) > 8 {
			k.prefix = k.prefix[:8]
		}
	}
	m.mu.RLock()
	s := m.series[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	return m.resolve(k, prices)
}

func (m *gatewayMetrics) resolve(k seriesKey, prices *spend.PriceTable) *seriesSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.series[k]; s != nil {
		return s
	}
	alias := k.alias
	if alias == "" {
		alias = "key_" + k.prefix
	}
	budget, ok := m.aliases[alias]
	if !ok {
		if len(m.aliases) >= maxAliasLabels {
			alias = otherLabel
			budget = m.aliases[alias]
		}
		if budget == nil {
			budget = m.budgetRejections.WithLabelValues(alias)
			m.aliases[alias] = budget
		}
	}
	model := k.model
	if _, seen := m.models[model]; !seen && model != "" {
		known := false
		if prices != nil {
			_, known = prices.Lookup(model)
		}
		if !known {
			if len(m.models) < maxUnknownModels {
				m.models[model] = struct{}{}
			} else {
				model = otherLabel
			}
		}
	}
	labels := [2]string{alias, model}
	s := m.byLabel[labels]
	if s == nil {
		s = &seriesSet{
			in:     m.tokens.WithLabelValues(alias, model, "in"),
			out:    m.tokens.WithLabelValues(alias, model, "out"),
			usd:    m.spendUSD.WithLabelValues(alias, model),
			budget: budget,
		}
		s.statuses.vec = m.requests
		s.statuses.labels = labels
		m.byLabel[labels] = s
	}
	if len(m.series) < maxSeriesCache {
		m.series[k] = s
	}
	return s
}

// request counts one response.
func (s *seriesSet) request(status int) { s.statuses.inc(status) }

// billed counts the tokens and spend of a committed request.
func (s *seriesSet) billed(in, out int64, cost money.Pico) {
	if in > 0 {
		s.in.Add(float64(in))
	}
	if out > 0 {
		s.out.Add(float64(out))
	}
	if cost > 0 {
		s.usd.Add(cost.USD())
	}
}

// budgetRejected counts a 429 for budget.
func (s *seriesSet) budgetRejected() {
	s.budget.Inc()
	s.statuses.inc(429)
}

// unauthenticatedRequest counts a response to a request without a valid
// key (there is no alias to label it with).
func (m *gatewayMetrics) unauthenticatedRequest(status int) { m.unauthenticated.inc(status) }

// boundedLabels admits up to max distinct values of a label, then maps new
// ones to "other", so a bug or a hostile input cannot grow a series set
// without bound.
type boundedLabels struct {
	mu   sync.Mutex
	max  int
	seen map[string]struct{}
}

func (b *boundedLabels) value(v string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return v
	}
	if b.seen == nil {
		b.seen = make(map[string]struct{})
	}
	if len(b.seen) >= b.max {
		return otherLabel
	}
	b.seen[v] = struct{}{}
	return v
}

// alertMetrics counts budget alerts. It is the alerter's alerts.Metrics
// (`Metrics: gatewayAlertMetrics()`); crossings themselves are
// counted by the ledger's sink (sinkSwitch), whether or not alerts are on.
// Label values are bounded: alert types and reasons are small fixed sets
// and anything past maxAlertTypes is "other".
type alertMetrics struct{ m *gatewayMetrics }

// gatewayAlertMetrics returns the process-wide alert counters.
func gatewayAlertMetrics() alertMetrics { return alertMetrics{gwMetrics()} }

// Crossed counts a budget threshold crossing the ledger reported.
func (a alertMetrics) Crossed(alertType string) {
	a.m.alertCrossings.WithLabelValues(a.m.alertTypes.value(alertType)).Inc()
}

// Suppressed counts a duplicate crossing that sent nothing; reason is
// where the duplicate was caught ("cache" or "claim").
func (a alertMetrics) Suppressed(alertType, reason string) {
	a.m.alertSuppressions.WithLabelValues(a.m.alertTypes.value(alertType), a.m.alertReasons.value(reason)).Inc()
}

// Enqueued counts an alert email committed to the outbox.
func (a alertMetrics) Enqueued(alertType string) { a.email(alertType, "enqueued") }

// NoRecipient counts an alert with nobody to send it to.
func (a alertMetrics) NoRecipient(alertType string) { a.email(alertType, "no_recipient") }

// Error counts a crossing that could not be handled (store, render, enqueue).
func (a alertMetrics) Error(alertType string) { a.email(alertType, "error") }

// Overflow counts a crossing that found the alerter's queue full.
func (a alertMetrics) Overflow() { a.m.alertOverflows.Inc() }

func (a alertMetrics) email(alertType, result string) {
	a.m.alertEmails.WithLabelValues(a.m.alertTypes.value(alertType), result).Inc()
}

// emailMetrics feeds mailer pools' delivery counts into emails_total.
type emailMetrics struct{ m *gatewayMetrics }

func gatewayEmailMetrics() mailer.Metrics { return emailMetrics{gwMetrics()} }

func (e emailMetrics) add(backend, result string) {
	e.m.emails.WithLabelValues(e.m.emailBackends.value(backend), result).Inc()
}

func (e emailMetrics) Queued(b string)    { e.add(b, "queued") }
func (e emailMetrics) Sent(b string)      { e.add(b, "sent") }
func (e emailMetrics) Failed(b string)    { e.add(b, "failed") }
func (e emailMetrics) Retried(b string)   { e.add(b, "retried") }
func (e emailMetrics) QueueFull(b string) { e.add(b, "queue_full") }

// stateCollector reads, on scrape, the outbox depth and the ledger's
// write-behind of every live shared state (normally one; several stores
// are summed, since a store URL is no label value).
type stateCollector struct {
	outbox     *prometheus.Desc
	pending    *prometheus.Desc
	retryRows  *prometheus.Desc
	queryLimit time.Duration

	mu    sync.Mutex
	cache map[*sharedState]*stateReading
}

type stateReading struct {
	at        time.Time
	outbox    map[string]int
	retryRows int
}

func newStateCollector() *stateCollector {
	return &stateCollector{
		outbox: prometheus.NewDesc(metricsNamespace+"_outbox_messages",
			"Email outbox messages by status (read from the store at most once a second).",
			[]string{"status"}, nil),
		pending: prometheus.NewDesc(metricsNamespace+"_ledger_pending_accounts",
			"Keys and users charged since the last write-behind flush: spend not yet in the store (flushed every second).",
			nil, nil),
		retryRows: prometheus.NewDesc(metricsNamespace+"_ledger_retry_rows",
			"Rows of a spend batch the store refused, waiting to be written again; above 0 the store is failing and the write-behind lags.",
			nil, nil),
		queryLimit: 2 * time.Second,
		cache:      make(map[*sharedState]*stateReading),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.outbox
	ch <- c.pending
	ch <- c.retryRows
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	// Take the list first: the pool's lock is not held across queries.
	var live []*sharedState
	states.Range(func(_, v any) bool {
		if s, ok := v.(*sharedState); ok {
			live = append(live, s)
		}
		return true
	})
	now := time.Now()
	outbox := map[string]int{}
	pending, retry := 0, 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.cache {
		if !containsState(live, s) {
			delete(c.cache, s)
		}
	}
	for _, s := range live {
		r := c.cache[s]
		if r == nil {
			r = &stateReading{}
			c.cache[s] = r
		}
		if r.outbox == nil || now.Sub(r.at) >= outboxCacheTTL {
			ctx, cancel := context.WithTimeout(context.Background(), c.queryLimit)
			counts, err := s.store.OutboxCounts(ctx)
			cancel()
			if err == nil { // else keep the last reading (store closing, or slow)
				r.outbox, r.at = counts, now
			}
		}
		for st, n := range r.outbox {
			outbox[st] += n
		}
		if s.ledger != nil {
			wb := s.ledger.WriteBehind()
			if wb.RetryRows >= 0 { // -1: a flush is running; keep the last value
				r.retryRows = wb.RetryRows
			}
			pending += wb.DirtyAccounts
			retry += r.retryRows
		}
	}
	for st, n := range outbox {
		ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(n), st)
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(c.retryRows, prometheus.GaugeValue, float64(retry))
}

func containsState(list []*sharedState, s *sharedState) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Interface guards
var (
	_ prometheus.Collector = (*stateCollector)(nil)
	_ mailer.Metrics       = emailMetrics{}
	_ alerts.Metrics       = alertMetrics{}
)
