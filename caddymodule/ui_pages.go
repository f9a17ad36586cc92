package caddymodule

import (
	"context"
	"errors"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
	"github.com/llmspend/llmspend/templates"
)

// Page handlers read the store directly (and the ledger for live spend);
// every change goes through the JSON admin routes from the page's script.

var uiFuncs = template.FuncMap{
	"dollars": uiDollars,
	"budget": func(p *money.Pico) string {
		if p == nil {
			return "No budget"
		}
		return uiDollars(*p)
	},
	"every": humanPeriod,
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("Jan 2, 2006 15:04 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("Jan 2, 2006 15:04 UTC")
		}
		return "—"
	},
	"join": strings.Join,
	"pct":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
}

// uiDollars shows cents from a dollar up, and the small amounts a few
// requests cost with the precision they need: "$14.50", "$0.000706".
func uiDollars(p money.Pico) string {
	if p >= money.USD || p <= -money.USD {
		return money.FromUSD(math.Round(p.USD()*100) / 100).Dollars()
	}
	return p.Dollars()
}

// humanPeriod turns a budget_duration into words: "1mo" → "month",
// "30d" → "30 days".
func humanPeriod(d string) string {
	units := []struct{ suffix, one string }{{"mo", "month"}, {"s", "second"}, {"m", "minute"}, {"h", "hour"}, {"d", "day"}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(d, u.suffix); ok {
			if v, err := strconv.Atoi(n); err == nil && v > 0 {
				if v == 1 {
					return u.one
				}
				return n + " " + u.one + "s"
			}
		}
	}
	return d
}

// bar is a spend-against-budget bar, drawn as SVG (the CSP allows no
// inline styles, so the width is an attribute).
type bar struct {
	Pct   float64 // 0..100, for the drawing
	Level string  // none, ok, warn, over
	Label string  // "12% of $10.00"
}

func budgetBar(spent money.Pico, max *money.Pico) bar {
	if max == nil {
		return bar{Level: "none", Label: "No budget"}
	}
	if *max <= 0 {
		return bar{Pct: 100, Level: "over", Label: "Budget $0.00"}
	}
	p := float64(spent) / float64(*max) * 100
	b := bar{Pct: math.Min(100, math.Max(0, p)), Level: "ok"}
	switch {
	case p >= 100:
		b.Level = "over"
	case p >= 80:
		b.Level = "warn"
	}
	b.Label = strconv.FormatFloat(math.Floor(p), 'f', 0, 64) + "% of " + uiDollars(*max)
	return b
}

type uiUserOpt struct {
	ID, Label, Short string
}

type uiKeyRow struct {
	ID, Token, Alias, KeyName string
	Owner, OwnerID            string
	Spend                     money.Pico
	Max, Soft                 *money.Pico
	Bar                       bar
	LastUsed                  string
	Blocked, Expired          bool
	Created                   time.Time
}

func ownerLabel(u *store.User) string {
	if u == nil {
		return ""
	}
	if u.UserEmail != "" {
		return u.UserEmail
	}
	if u.UserAlias != "" {
		return u.UserAlias
	}
	return u.UserID
}

func (h *AdminHandler) keyRow(k *store.Key, users map[string]*store.User, now time.Time) uiKeyRow {
	sp, _ := h.liveSpend(store.KindKey, k.ID, k.Spend, k.BudgetResetAt)
	row := uiKeyRow{
		ID: k.ID, Token: k.Token, Alias: k.KeyAlias, KeyName: k.KeyName, OwnerID: k.UserID,
		Spend: sp, Max: k.MaxBudget, Soft: k.SoftBudget, Bar: budgetBar(sp, k.MaxBudget),
		Blocked: k.Blocked, Expired: k.Expires != nil && !k.Expires.After(now), Created: k.CreatedAt,
		LastUsed: "Never",
	}
	row.Owner = ownerLabel(users[k.UserID])
	if row.Owner == "" {
		row.Owner = k.UserID
	}
	if k.LastUsedAt != nil {
		row.LastUsed = relTime(*k.LastUsedAt, now)
	}
	return row
}

// relTime is "just now", "5 min ago", "3 h ago", "Dec 4".
func relTime(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 24*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	}
	return t.UTC().Format("Jan 2")
}

// lastActive falls back on the daily history (day precision) for keys
// whose last-used time is not recorded.
func (h *AdminHandler) lastActive(ctx context.Context, keyID string, now time.Time) string {
	today := now.UTC()
	rows, err := h.state.store.DailySpendFor(ctx, keyID, today.AddDate(0, 0, -90).Format(time.DateOnly), today.Format(time.DateOnly))
	if err != nil || len(rows) == 0 {
		return "Never"
	}
	last := ""
	for _, r := range rows {
		if r.Requests > 0 && r.Day > last {
			last = r.Day
		}
	}
	switch last {
	case "":
		return "Never"
	case today.Format(time.DateOnly):
		return "Today"
	case today.AddDate(0, 0, -1).Format(time.DateOnly):
		return "Yesterday"
	}
	d, _ := time.Parse(time.DateOnly, last)
	return d.Format("Jan 2")
}

func (h *AdminHandler) usersByID(ctx context.Context) ([]store.User, map[string]*store.User, error) {
	users, err := h.state.store.ListUsers(ctx)
	if err != nil {
		return nil, nil, err
	}
	m := make(map[string]*store.User, len(users))
	for i := range users {
		m[users[i].UserID] = &users[i]
	}
	return users, m, nil
}

func userOptions(users []store.User) []uiUserOpt {
	out := make([]uiUserOpt, 0, len(users))
	for i := range users {
		label := ownerLabel(&users[i])
		if label != users[i].UserID {
			label += " (" + users[i].UserID + ")"
		}
		out = append(out, uiUserOpt{ID: users[i].UserID, Label: label, Short: ownerLabel(&users[i])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Label < out[j].Label })
	return out
}

func (h *AdminHandler) uiFail(w http.ResponseWriter, r *http.Request, err error) {
	h.logger.Error("web UI page failed", zap.String("path", r.URL.Path), zap.Error(err))
	h.uiMessage(w, r, http.StatusInternalServerError, "Something went wrong", "The gateway could not load this page. The details are in the gateway log.", r.URL.Path, "Try again")
}

// --- Virtual Keys ---

type uiKeysData struct {
	Keys  []uiKeyRow
	Users []uiUserOpt
	Owner string // filter
}

func (h *AdminHandler) uiKeysPage(w http.ResponseWriter, r *http.Request, s *uiSession) {
	ctx := r.Context()
	owner := r.URL.Query().Get("user_id")
	keys, err := h.state.store.ListKeys(ctx, owner)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	users, byID, err := h.usersByID(ctx)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	now := h.now()
	d := uiKeysData{Users: userOptions(users), Owner: owner}
	if len(keys) <= 200 {
		h.flushSpend(ctx) // last-used days come from the daily history
	}
	for i := range keys {
		row := h.keyRow(&keys[i], byID, now)
		if keys[i].LastUsedAt == nil && len(keys) <= 200 {
			row.LastUsed = h.lastActive(ctx, keys[i].ID, now)
		}
		d.Keys = append(d.Keys, row)
	}
	sort.SliceStable(d.Keys, func(i, j int) bool { return d.Keys[i].Created.After(d.Keys[j].Created) })
	h.render(w, http.StatusOK, "keys", pageData{Title: "Virtual Keys", Nav: "keys", CSRF: s.CSRF, Data: d})
}

// --- Key detail ---

type uiAlertRow struct {
	What   string
	SentAt time.Time
}

type uiKeyData struct {
	Key        uiKeyRow
	Models     []string
	Duration   string
	ResetAt    *time.Time
	Expires    *time.Time
	Thresholds []string
	Alerts     []uiAlertRow
	Chart      chart
	Days       int
	Total      money.Pico
	Requests   int64
}

func (h *AdminHandler) uiKeyPage(w http.ResponseWriter, r *http.Request, s *uiSession) {
	ctx := r.Context()
	k, err := h.state.store.GetKey(ctx, r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		h.render(w, http.StatusNotFound, "message", pageData{Title: "Key not found", Nav: "keys", CSRF: s.CSRF,
			Data: messageData{"Key not found", "This key does not exist. It may have been deleted.", "/ui/keys", "All keys"}})
		return
	}
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	_, byID, err := h.usersByID(ctx)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	now := h.now()
	d := uiKeyData{Key: h.keyRow(k, byID, now), Models: k.Models, Duration: k.BudgetDuration, Expires: k.Expires, Days: 30}
	_, d.ResetAt = h.liveSpend(store.KindKey, k.ID, k.Spend, k.BudgetResetAt)
	for _, p := range alertPercents(k.Metadata) {
		d.Thresholds = append(d.Thresholds, strconv.Itoa(p)+"%")
	}
	alerts, err := h.state.store.ListAlerts(ctx, store.KindKey, k.ID)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	for _, a := range alerts {
		what := "Soft budget crossed"
		if a.AlertType == "max_budget" {
			what = "Max budget alert: " + strconv.Itoa(a.Threshold) + "% reached"
		}
		d.Alerts = append(d.Alerts, uiAlertRow{What: what, SentAt: a.SentAt})
	}
	daily, err := h.dailySpend(ctx, k.ID, d.Days, now)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	for _, row := range daily {
		d.Total += row.Spend
		d.Requests += row.Requests
	}
	if k.LastUsedAt == nil {
		d.Key.LastUsed = h.lastActive(ctx, k.ID, now)
	}
	d.Chart = buildChart(daily, d.Days, now)
	title := k.KeyAlias
	if title == "" {
		title = k.KeyName
	}
	h.render(w, http.StatusOK, "key", pageData{Title: title, Nav: "keys", CSRF: s.CSRF, Data: d})
}

// --- Users ---

type uiUserRow struct {
	ID, Email, Alias, Role string
	Spend                  money.Pico
	Max                    *money.Pico
	Bar                    bar
	Duration               string
	Keys                   int
	Created                time.Time
}

type uiUsersData struct {
	Users           []uiUserRow
	EmailConfigured bool
	Backend         string
}

func (h *AdminHandler) uiUsersPage(w http.ResponseWriter, r *http.Request, s *uiSession) {
	ctx := r.Context()
	users, err := h.state.store.ListUsers(ctx)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	keys, err := h.state.store.ListKeys(ctx, "")
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	count := map[string]int{}
	for _, k := range keys {
		count[k.UserID]++
	}
	d := uiUsersData{EmailConfigured: h.app.emailConfigured(), Backend: h.app.mailConfig.ActiveBackend()}
	for i := range users {
		u := &users[i]
		sp, _ := h.liveSpend(store.KindUser, u.UserID, u.Spend, u.BudgetResetAt)
		d.Users = append(d.Users, uiUserRow{
			ID: u.UserID, Email: u.UserEmail, Alias: u.UserAlias, Role: u.UserRole,
			Spend: sp, Max: u.MaxBudget, Bar: budgetBar(sp, u.MaxBudget), Duration: u.BudgetDuration,
			Keys: count[u.UserID], Created: u.CreatedAt,
		})
	}
	sort.SliceStable(d.Users, func(i, j int) bool { return d.Users[i].Created.After(d.Users[j].Created) })
	h.render(w, http.StatusOK, "users", pageData{Title: "Users", Nav: "users", CSRF: s.CSRF, Data: d})
}

// --- Email ---

type uiOutboxRow struct {
	ID                     int64
	Kind, To, Subject      string
	Status, Error, Backend string
	Attempts               int
	Created                time.Time
	SentAt                 *time.Time
	Retryable, Sensitive   bool
}

type uiTemplate struct {
	Name, Title, Subject string
}

type uiHealth struct {
	Level string // ok, warn, bad, idle
	Text  string
}

type uiEmailData struct {
	Backend    string
	Configured bool
	Sender     string
	Health     uiHealth
	Counts     map[string]int
	Status     string
	Messages   []uiOutboxRow
	Templates  []uiTemplate
}

var templateTitles = map[string]string{
	templates.NameInvitation: "Invitation",
	templates.NameKeyCreated: "Key created",
	templates.NameKeyRotated: "Key rotated",
	templates.NameSoftBudget: "Soft budget alert",
	templates.NameMaxBudget:  "Max budget alert",
}

// emailHealth judges delivery from the outbox: the newest finished message
// decides, and messages waiting for a retry mean the backend is struggling.
func emailHealth(configured bool, backend string, recent []store.OutboxMessage) uiHealth {
	if !configured {
		return uiHealth{"idle", "No email backend is configured: messages are written to the gateway log, not sent. Set SMTP_HOST, RESEND_API_KEY or SENDGRID_API_KEY."}
	}
	for _, m := range recent {
		if m.Status == store.StatusPending && m.Attempts > 0 && m.LastError != "" {
			return uiHealth{"warn", "Retrying: the last attempt failed with \u201c" + clip(m.LastError, 160) + "\u201d"}
		}
	}
	for _, m := range recent {
		switch m.Status {
		case store.StatusSent:
			return uiHealth{"ok", "Delivering: the last message was accepted by " + backend + "."}
		case store.StatusFailed:
			return uiHealth{"bad", "The last message failed: " + clip(m.LastError, 160)}
		}
	}
	return uiHealth{"ok", "Configured; nothing sent yet. Send a test email to check the connection."}
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func (h *AdminHandler) uiEmailPage(w http.ResponseWriter, r *http.Request, s *uiSession) {
	ctx := r.Context()
	status := r.URL.Query().Get("status")
	switch status {
	case "", store.StatusPending, store.StatusSending, store.StatusSent, store.StatusFailed:
	default:
		status = ""
	}
	msgs, err := h.state.store.ListOutbox(ctx, status, 100)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	recent := msgs
	if status != "" {
		if recent, err = h.state.store.ListOutbox(ctx, "", 50); err != nil {
			h.uiFail(w, r, err)
			return
		}
	}
	counts, err := h.state.store.OutboxCounts(ctx)
	if err != nil {
		h.uiFail(w, r, err)
		return
	}
	mc := h.app.mailConfig
	d := uiEmailData{
		Backend: mc.ActiveBackend(), Configured: mc.Configured(), Sender: mc.Sender(),
		Counts: counts, Status: status,
	}
	d.Health = emailHealth(d.Configured, d.Backend, recent)
	for i := range msgs {
		m := &msgs[i]
		d.Messages = append(d.Messages, uiOutboxRow{
			ID: m.ID, Kind: m.Kind, To: strings.Join(m.To, ", "), Subject: m.Subject, Status: m.Status,
			Error: m.LastError, Backend: m.Backend, Attempts: m.Attempts, Created: m.CreatedAt, SentAt: m.SentAt,
			Retryable: m.Status == store.StatusFailed && !m.Sensitive, Sensitive: m.Sensitive,
		})
	}
	for _, name := range h.app.renderer.Names() {
		t := uiTemplate{Name: name, Title: templateTitles[name]}
		if t.Title == "" {
			t.Title = name
		}
		if p, err := h.app.renderer.Preview(name, "text"); err == nil {
			t.Subject = p.Subject
		}
		d.Templates = append(d.Templates, t)
	}
	h.render(w, http.StatusOK, "email", pageData{Title: "Email", Nav: "email", CSRF: s.CSRF, Data: d})
}
