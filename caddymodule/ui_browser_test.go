package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/llmspend/llmspend/mailer/smtptest"
	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// The browser tests drive Debian's Chromium headless through the UI flows
// a LiteLLM user knows. CI needs the chromium package (apt-get install -y
// chromium); without it the tests skip and say so.
//
// LLMSPEND_UI_SHOTS=<dir> saves screenshots there (docs/img for the README).

const chromiumPath = "/usr/bin/chromium"

type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser test skipped: %s not found (apt-get install -y chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("LLMSPEND_UI_SHOTS")}
	b.do(chromedp.EmulateViewport(1280, 860))
	return b
}

// incognito opens a tab in a separate browser context: no cookies shared.
func (b *browser) incognito() *browser {
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	nb := &browser{t: b.t, ctx: ctx, shots: b.shots}
	nb.do(chromedp.EmulateViewport(1280, 860))
	return nb
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) eval(js string) any {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](js))
	if err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// set sets an input's or select's value, as a user would.
func (b *browser) set(sel, v string) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, v)
	return chromedp.Evaluate[chromedp.Void](js)
}

func (b *browser) waitFor(js string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[any](js, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v", js, err)
	}
}

// shot saves a screenshot of the viewport (full page when full) as a small
// palette PNG.
func (b *browser) shot(name string, full bool) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	b.do(chromedp.Sleep(150 * time.Millisecond)) // let fonts and transitions settle
	if full {
		// Grow the viewport to the page instead of a full-page capture:
		// sandboxed frames (the email previews) render in another process
		// and are painted only inside the viewport.
		w := b.eval(`window.innerWidth`).(float64)
		h := b.eval(`document.documentElement.scrollHeight`).(float64)
		b.do(chromedp.EmulateViewport(int64(w), int64(h)), chromedp.Sleep(400*time.Millisecond))
		defer b.do(chromedp.EmulateViewport(int64(w), 860))
	}
	raw, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, paletted(img)); err != nil {
		b.t.Fatal(err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(b.shots, "ui-"+name+".png")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("%s: %dx%d, %d KB", p, img.Bounds().Dx(), img.Bounds().Dy(), buf.Len()/1024)
}

// paletted maps img onto its 256 most frequent colours (nearest, no
// dithering: flat UI backgrounds stay flat), which keeps PNGs small.
func paletted(img image.Image) image.Image {
	bd := img.Bounds()
	counts := map[color.RGBA]int{}
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			counts[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	cols := make([]color.RGBA, 0, len(counts))
	for c := range counts {
		cols = append(cols, c)
	}
	sort.Slice(cols, func(i, j int) bool { return counts[cols[i]] > counts[cols[j]] })
	if len(cols) > 256 {
		cols = cols[:256]
	}
	pal := make(color.Palette, len(cols))
	for i, c := range cols {
		pal[i] = c
	}
	out := image.NewPaletted(bd, pal)
	cache := map[color.RGBA]uint8{}
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			idx, ok := cache[c]
			if !ok {
				idx = uint8(pal.Index(c))
				cache[c] = idx
			}
			out.SetColorIndex(x, y, idx)
		}
	}
	return out
}

// mailTo waits for a message to addr whose subject contains subject.
func mailTo(t *testing.T, srv *smtptest.Server, addr, subject string, timeout time.Duration) (smtptest.Received, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range srv.Messages() {
			for _, to := range m.To {
				if to == addr && strings.Contains(decodeQP(string(m.Data)), subject) {
					return m, true
				}
			}
		}
		if time.Now().After(deadline) {
			return smtptest.Received{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decodeQP undoes quoted-printable line folding and '=' escapes, enough to
// find links and keys in a message.
func decodeQP(s string) string {
	s = strings.ReplaceAll(s, "=\r\n", "")
	return strings.ReplaceAll(s, "=3D", "=")
}

// seedHistory writes a month of plausible daily spend for key k (three
// models, quieter weekends) and the matching spend and alert history.
func seedHistory(t *testing.T, st store.Store, k *store.Key, userID string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	models := []struct {
		name  string
		base  float64 // USD on a weekday
		input int64
	}{{"gpt-4o-mini", 0.09, 380_000}, {"claude-sonnet-4-20250514", 0.34, 70_000}, {"gpt-4o", 0.16, 40_000}}
	var b store.SpendBatch
	var total money.Pico
	for i := 29; i >= 0; i-- {
		day := now.AddDate(0, 0, -i)
		f := 0.55 + 0.45*math.Sin(float64(i)/4.5) + float64(29-i)/40
		if wd := day.Weekday(); wd == time.Saturday || wd == time.Sunday {
			f *= 0.25
		}
		for j, m := range models {
			if j == 2 && i > 18 { // gpt-4o was adopted later
				continue
			}
			amt := money.FromUSD(math.Round(m.base*f*(1+0.3*float64((i*7+j*3)%5)/4)*1e4) / 1e4)
			b.Daily = append(b.Daily, store.DailySpend{KeyID: k.ID, Model: m.name, Day: day.Format(time.DateOnly),
				Spend: amt, InputTokens: int64(float64(m.input) * f), OutputTokens: int64(float64(m.input) * f / 6), Requests: int64(40*f) + 1})
			total += amt
		}
	}
	u, err := st.GetUser(ctx, userID)
	if err != nil {
		t.Fatal(err)
	}
	b.Deltas = []store.SpendDelta{{Kind: store.KindKey, ID: k.ID, Window: k.BudgetResetAt, Amount: total}, {Kind: store.KindUser, ID: userID, Window: u.BudgetResetAt, Amount: total}}
	if err := st.ApplySpend(ctx, b); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		pct int
		ago time.Duration
	}{{50, 9 * 24 * time.Hour}, {80, 2*24*time.Hour + 5*time.Hour}} {
		c := store.AlertClaim{Kind: store.KindKey, ID: k.ID, AlertType: "max_budget", Threshold: a.pct, Window: "seeded"}
		if _, err := st.ClaimAlert(ctx, c, now.Add(-a.ago), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUIBrowserFlows(t *testing.T) {
	b := newBrowser(t)
	srv := smtptest.Start(t, smtptest.Options{})
	g := newGateway(t, smtpBlock(srv)+"\n\t\talerts email")
	// Links in emails point at this gateway.
	g.extra += "\n\t\ttemplates {\n\t\t\tbase_url " + g.base + "\n\t\t\tcompany_name Acme\n\t\t}"
	g.load()
	st := sharedStore(t)
	ctx := context.Background()

	// --- sign in ---
	b.do(chromedp.Navigate(g.base+"/ui/users"), chromedp.WaitVisible(chromedp.CSS("#master_key")))
	b.shot("signin", false)
	b.do(chromedp.SendKeys(chromedp.CSS("#master_key"), "not-the-key"), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(".form-error")))
	if msg := b.text(".form-error"); !strings.Contains(msg, "not the master key") {
		t.Fatalf("wrong key message: %q", msg)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#master_key"), testMasterKey), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#open-create-user")))
	if h := b.text("h1"); h != "Users" {
		t.Fatalf("after sign-in (next=/ui/users) landed on %q", h)
	}
	// The session cookie is invisible to scripts.
	if c := b.eval(`document.cookie`); c != "" {
		t.Fatalf("document.cookie = %q", c)
	}
	b.shot("users-empty", false)

	// --- Users > Create User with "Send invite email" ---
	b.do(chromedp.Click(chromedp.CSS("#open-create-user")), chromedp.WaitVisible(chromedp.CSS("#user_email")))
	if b.eval(`document.querySelector('#user_send_invite').checked`) != true {
		t.Fatal("Send invite email is not on by default with an email backend configured")
	}
	// An invalid address is refused in place, by the API's own message.
	b.do(chromedp.SendKeys(chromedp.CSS("#user_email"), "not-an-email"), chromedp.Click(chromedp.CSS("#create-user-submit")),
		chromedp.WaitVisible(chromedp.CSS("#create-user .form-error")))
	if msg := b.text("#create-user .form-error"); !strings.Contains(msg, "not a valid email") {
		t.Fatalf("inline error: %q", msg)
	}
	if b.eval(`document.querySelector('#user_email').getAttribute('aria-invalid')`) != "true" {
		t.Fatal("the refused field is not marked")
	}
	b.shot("create-user-error", false)
	b.do(b.set("#user_email", ""), chromedp.SendKeys(chromedp.CSS("#user_email"), "ada@example.com"),
		chromedp.SendKeys(chromedp.CSS("#user_max_budget"), "50"),
		b.set("#user_budget_duration", "1mo"))
	if b.eval(`document.querySelector('#create-user .form-error').hidden`) != true {
		t.Fatal("the error stays after the field was edited")
	}
	b.shot("create-user", false)
	b.do(chromedp.Click(chromedp.CSS("#create-user-submit")), chromedp.WaitVisible(chromedp.CSS("#reveal-done")))
	if txt := b.text("#reveal"); !strings.Contains(txt, "ada@example.com was added") {
		t.Fatalf("user created dialog: %q", txt)
	}
	b.do(chromedp.Click(chromedp.CSS("#reveal-done")), chromedp.WaitVisible(chromedp.CSS("table.table")))
	if row := b.text("table.table tbody"); !strings.Contains(row, "ada@example.com") || !strings.Contains(row, "of $50.00") {
		t.Fatalf("users table: %q", row)
	}
	users, _ := st.ListUsers(ctx)
	if len(users) != 1 || users[0].UserEmail != "ada@example.com" {
		t.Fatalf("users in store: %+v", users)
	}
	adaID := users[0].UserID

	// The invitation email (lifecycle emails, issue 5).
	var inviteLink string
	if m, ok := mailTo(t, srv, "ada@example.com", "Invitation", 10*time.Second); ok {
		found := regexp.MustCompile(`/ui\?invitation_id=([A-Za-z0-9_.~%-]+)`).FindStringSubmatch(decodeQP(string(m.Data)))
		if found == nil {
			t.Fatalf("invitation email without a link: %s", m.Data)
		}
		inviteLink = g.base + found[0]
	} else {
		t.Errorf("no invitation email reached the SMTP server for ada@example.com (lifecycle emails not wired?)")
		inv := &store.Invitation{ID: "browser-test-invitation", UserID: adaID, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
		inviteLink = g.base + "/ui?invitation_id=" + inv.ID
	}

	// --- Virtual Keys > Create Key with owner, Advanced Settings, Send Email ---
	b.do(chromedp.Navigate(g.base+"/ui/keys"), chromedp.WaitVisible(chromedp.CSS("#open-create-key")))
	b.shot("keys-empty", false)
	b.do(chromedp.Click(chromedp.CSS("#open-create-key")), chromedp.WaitVisible(chromedp.CSS("#key_alias")),
		chromedp.SendKeys(chromedp.CSS("#key_alias"), "billing-service"),
		b.set("#key_owner", adaID),
		chromedp.Click(chromedp.CSS("#key-advanced summary")), chromedp.WaitVisible(chromedp.CSS("#key_max_budget")),
		chromedp.SendKeys(chromedp.CSS("#key_max_budget"), "0.002"),
		chromedp.SendKeys(chromedp.CSS("#key_soft_budget"), "0.001"),
		b.set("#key_budget_duration", "30d"),
		chromedp.SendKeys(chromedp.CSS("#key_alert_percents"), "50, 100"),
		chromedp.SendKeys(chromedp.CSS("#key_alert_emails"), "finance@example.com"),
		chromedp.Click(chromedp.CSS("#key_send_email")),
	)
	b.shot("create-key", false)
	b.do(chromedp.Click(chromedp.CSS("#create-key-submit")), chromedp.WaitVisible(chromedp.CSS("#reveal-key")))
	key1 := b.text("#reveal-key")
	if !strings.HasPrefix(key1, "sk-") {
		t.Fatalf("created key shown as %q", key1)
	}
	b.shot("key-created", false)
	k, err := st.GetKeyByToken(ctx, tokenHex(hashKey(key1)))
	if err != nil {
		t.Fatal(err)
	}
	if k.UserID != adaID || k.KeyAlias != "billing-service" || k.MaxBudget == nil || k.BudgetDuration != "30d" {
		t.Fatalf("stored key: %+v", k)
	}
	if th := alertPercents(k.Metadata); len(th) != 2 || th[0] != 50 || th[1] != 100 {
		t.Fatalf("alert thresholds from the form: %v (metadata %v)", th, k.Metadata)
	}
	if m, ok := mailTo(t, srv, "ada@example.com", "Key Created", 10*time.Second); ok {
		if !strings.Contains(decodeQP(string(m.Data)), key1) {
			t.Errorf("key-created email does not carry the key")
		}
	} else {
		t.Errorf("no key-created email reached the SMTP server (lifecycle emails not wired?)")
	}
	b.do(chromedp.Click(chromedp.CSS("#reveal-done")), chromedp.WaitVisible(chromedp.CSS("a.rowlink")))

	// --- traffic, then spend on the key page ---
	// gpt-4o costs the most per request: two of them cross 50% of the key's
	// $0.002 budget, which sends the 50% alert.
	for _, model := range []string{"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022", "gpt-4o"} {
		if r := g.chat(key1, model); r.Status != 200 {
			t.Fatalf("chat %s: %d %s", model, r.Status, r.Body)
		}
	}
	if _, ok := mailTo(t, srv, "finance@example.com", "Max Budget", 10*time.Second); !ok {
		t.Errorf("no 50%% budget alert reached finance@example.com")
	}
	b.do(chromedp.Navigate(g.base+"/ui/keys/"+k.ID), chromedp.WaitVisible(chromedp.CSS("#spend-chart")))
	if s := b.text("#key-spend"); s == "$0.00" || !strings.HasPrefix(s, "$") {
		t.Fatalf("key page spend after traffic: %q", s)
	}
	if n := b.eval(`document.querySelectorAll('#spend-chart rect.seg').length`); n.(float64) != 3 {
		t.Fatalf("chart has %v bars, want one per model", n)
	}
	if lg := b.text(".legend"); !strings.Contains(lg, "gpt-4o-mini") || !strings.Contains(lg, "claude-3-5-haiku") {
		t.Fatalf("legend: %q", lg)
	}
	if al := b.text("#alerts"); !strings.Contains(al, "50% reached") {
		t.Fatalf("alert history: %q", al)
	}

	// More keys, and a month of history on one of them for the screenshots:
	// written to the store directly, then a restart loads it (the browser's
	// session survives the restart: it is signed with a key derived from
	// the master key).
	second := g.newKey(map[string]any{"key_alias": "notebook-experiments", "user_id": adaID, "max_budget": 20, "budget_duration": "1mo",
		"metadata": map[string]any{"max_budget_alert_emails": map[string]any{"50": []string{}, "80": []string{"finance@example.com"}}}})
	g.newKey(map[string]any{"key_alias": "ci-smoke-tests", "max_budget": 5})
	g.newKey(map[string]any{"key_alias": "support-bot", "max_budget": 50, "blocked": true})
	k2, err := st.GetKeyByToken(ctx, tokenHex(hashKey(second)))
	if err != nil {
		t.Fatal(err)
	}
	seedHistory(t, st, k2, adaID)
	g.restart()
	st = sharedStore(t) // the old store was closed
	b.do(chromedp.Navigate(g.base+"/ui/keys"), chromedp.WaitVisible(chromedp.CSS("a.rowlink")))
	if txt := b.text("table.table"); !strings.Contains(txt, "notebook-experiments") || !strings.Contains(txt, "Today") {
		t.Fatalf("keys table after restart: %q", txt)
	}
	b.shot("keys", false)
	b.do(chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("a.rowlink")))
	b.shot("keys-mobile", false)
	b.do(chromedp.EmulateViewport(1280, 860))
	b.do(chromedp.Navigate(g.base+"/ui/keys/"+k2.ID), chromedp.WaitVisible(chromedp.CSS("#spend-chart")))
	if n := b.eval(`document.querySelectorAll('#spend-chart rect.seg').length`); n.(float64) < 40 {
		t.Fatalf("a month of history drew only %v bars", n)
	}
	b.shot("key", true)
	b.do(chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#spend-chart")))
	b.shot("key-mobile", true)
	b.do(chromedp.EmulateViewport(1280, 860), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#spend-chart")))
	b.do(chromedp.Navigate(g.base+"/ui/users"), chromedp.WaitVisible(chromedp.CSS("table.table")))
	b.shot("users", false)
	b.do(chromedp.Navigate(g.base+"/ui/keys/"+k.ID), chromedp.WaitVisible(chromedp.CSS("#regenerate")))

	// --- Regenerate Key, with confirmation ---
	b.do(chromedp.Click(chromedp.CSS("#regenerate")), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")))
	b.shot("regenerate-confirm", false)
	b.do(chromedp.Click(chromedp.CSS("#confirm-ok")), chromedp.WaitVisible(chromedp.CSS("#reveal-key")))
	key2 := b.text("#reveal-key")
	if !strings.HasPrefix(key2, "sk-") || key2 == key1 {
		t.Fatalf("regenerated key %q (old %q)", key2, key1)
	}
	if r := g.chat(key1, "gpt-4o-mini"); r.Status != http.StatusUnauthorized {
		t.Fatalf("old key after regenerate: %d", r.Status)
	}
	if r := g.chat(key2, "gpt-4o-mini"); r.Status != 200 && r.Status != http.StatusTooManyRequests {
		t.Fatalf("new key: %d %s", r.Status, r.Body)
	}
	if m, ok := mailTo(t, srv, "ada@example.com", "Rotated", 10*time.Second); ok {
		if !strings.Contains(decodeQP(string(m.Data)), key2) {
			t.Errorf("key-rotated email does not carry the new key")
		}
	} else {
		t.Errorf("no key-rotated email reached the SMTP server (lifecycle emails not wired?)")
	}
	b.do(chromedp.Click(chromedp.CSS("#reveal-done")), chromedp.WaitVisible(chromedp.CSS("#spend-chart")))

	// --- block, unblock ---
	b.do(chromedp.Click(chromedp.CSS("#block")), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")),
		chromedp.Click(chromedp.CSS("#confirm-ok")), chromedp.WaitVisible(chromedp.CSS("#unblock")))
	if r := g.chat(key2, "gpt-4o-mini"); r.Status != http.StatusUnauthorized {
		t.Fatalf("blocked key: %d", r.Status)
	}
	b.do(chromedp.Click(chromedp.CSS("#unblock")), chromedp.WaitVisible(chromedp.CSS("#block")))
	if r := g.chat(key2, "gpt-4o-mini"); r.Status == http.StatusUnauthorized {
		t.Fatalf("unblocked key still refused: %s", r.Body)
	}

	// --- the invitation link, as the invited user (no session) ---
	guest := b.incognito()
	guest.do(chromedp.Navigate(inviteLink), chromedp.WaitVisible(chromedp.CSS("#reveal-invite-key")))
	if h := guest.text("h1"); !strings.Contains(h, "ada@example.com") {
		t.Fatalf("invitation welcome: %q", h)
	}
	guest.shot("invitation", false)
	guest.do(chromedp.Click(chromedp.CSS("#reveal-invite-key")), chromedp.WaitVisible(chromedp.CSS("#invite-key")))
	invKey := guest.text("#invite-key")
	if r := g.chat(invKey, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("invited user's key: %d %s", r.Status, r.Body)
	}
	guest.shot("invitation-key", false)
	guest.do(chromedp.Navigate(inviteLink), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h := guest.text("h1"); !strings.Contains(h, "already been used") {
		t.Fatalf("reused invitation: %q", h)
	}
	// The guest has no session: the admin pages send it to sign-in.
	guest.do(chromedp.Navigate(g.base+"/ui/keys"), chromedp.WaitVisible(chromedp.CSS("#master_key")))

	// --- Email page: outbox, test email, previews ---
	before := srv.Count()
	b.do(chromedp.Navigate(g.base+"/ui/email"), chromedp.WaitVisible(chromedp.CSS("#test_to")),
		chromedp.SendKeys(chromedp.CSS("#test_to"), "ops@example.com"), chromedp.Click(chromedp.CSS("#send-test")),
		chromedp.WaitVisible(chromedp.CSS(".form-ok")))
	if ok := b.text(".form-ok"); !strings.Contains(ok, "smtp") {
		t.Fatalf("test email result: %q", ok)
	}
	if _, err := srv.WaitFor(before+1, 5*time.Second); err != nil {
		t.Fatalf("test email: %v", err)
	}
	if got := b.text("#email-backend"); got != "smtp" {
		t.Fatalf("backend shown: %q", got)
	}
	// The previews render inside sandboxed frames (their own CSP).
	b.waitFor(`Array.from(document.querySelectorAll('.preview iframe')).every(f => f.contentDocument === null || f.contentDocument.readyState === 'complete')`)
	b.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#test_to")))
	b.shot("email", true)

	// --- a failed message, retried from the outbox ---
	srv.Reject(smtptest.StageRcpt, 100, 550, "mailbox unavailable")
	g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "ghost@example.com", "send_invite_email": true, "auto_create_key": false})
	var failedID int64
	deadline := time.Now().Add(10 * time.Second)
	for failedID == 0 && time.Now().Before(deadline) {
		msgs, _ := st.ListOutbox(ctx, store.StatusFailed, 10)
		for _, m := range msgs {
			if !m.Sensitive {
				failedID = m.ID
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if failedID != 0 {
		srv.Reject(smtptest.StageRcpt, 0, 0, "")
		b.do(chromedp.Navigate(g.base+"/ui/email?status=failed"), chromedp.WaitVisible(chromedp.CSS("#outbox [data-call]")))
		if txt := b.text("#outbox"); !strings.Contains(txt, "550") {
			t.Fatalf("failure reason not shown: %q", txt)
		}
		b.shot("email-failed", false)
		b.do(chromedp.Click(chromedp.CSS("#outbox [data-call]")), chromedp.WaitNotPresent(chromedp.CSS("#outbox [data-call]")))
		m, err := st.GetMessage(ctx, failedID)
		if err != nil || m.Status == store.StatusFailed {
			t.Fatalf("retried message: %+v %v", m, err)
		}
	} else {
		all, _ := st.ListOutbox(ctx, "", 20)
		for _, m := range all {
			t.Logf("outbox %d %s %v %s %q sensitive=%v", m.ID, m.Kind, m.To, m.Status, m.LastError, m.Sensitive)
		}
		t.Errorf("no failed invitation in the outbox to retry")
	}

	// --- delete, with confirmation ---
	b.do(chromedp.Navigate(g.base+"/ui/keys/"+k.ID), chromedp.WaitVisible(chromedp.CSS("#delete")),
		chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")),
		chromedp.Click(chromedp.CSS("#confirm-ok")), chromedp.WaitVisible(chromedp.CSS("#open-create-key")))
	if r := g.chat(key2, "gpt-4o-mini"); r.Status != http.StatusUnauthorized {
		t.Fatalf("deleted key: %d", r.Status)
	}

	// --- sign out ---
	b.do(chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#master_key")))
	b.do(chromedp.Navigate(g.base+"/ui/users"), chromedp.WaitVisible(chromedp.CSS("#master_key")))
}
