package templates

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nethtml "golang.org/x/net/html"

	"github.com/llmspend/llmspend/money"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current templates")

// fixedNow makes the sample data, and so the golden files, deterministic.
var fixedNow = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

func newRenderer(t testing.TB, s Settings) *Renderer {
	t.Helper()
	r, err := New(s)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.now = func() time.Time { return fixedNow }
	return r
}

func defaults() Settings { return SettingsFromEnv(func(string) string { return "" }) }

func pico(usd int64) *money.Pico { p := money.Pico(usd) * money.USD; return &p }

// TestGolden pins every email, both parts and the subject. Run
// `go test ./templates -update` after an intended change and review the diff
// (and the screenshots: templates/screenshot.sh).
func TestGolden(t *testing.T) {
	r := newRenderer(t, defaults())
	for _, name := range r.Names() {
		t.Run(name, func(t *testing.T) {
			out, err := r.Preview(name, "")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, name+".html", out.HTML)
			checkGolden(t, name+".txt", "Subject: "+out.Subject+"\n\n"+out.Text)
		})
	}
}

func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", file)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./templates -update)", err)
	}
	if string(want) != got {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs from golden at line %d:\n got: %q\nwant: %q\n(run go test ./templates -update if intended)", path, i+1, g, w)
			}
		}
	}
}

func TestSettingsFromEnv(t *testing.T) {
	s := defaults()
	want := Settings{
		LogoURL: DefaultLogoURL, SupportContact: "support@berri.ai", CompanyName: "LiteLLM",
		BaseURL: "http://0.0.0.0:4000", IncludeAPIKey: true,
		SubjectInvitation: "LiteLLM: New User Invitation", SubjectKeyCreated: "LiteLLM: API Key Created",
		SubjectKeyRotated: "LiteLLM: API Key Rotated", SubjectBudgetAlert: "LiteLLM: {event_message}",
	}
	if s != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", s, want)
	}

	env := map[string]string{
		"EMAIL_LOGO_URL":            "https://acme.example/logo.png",
		"EMAIL_SUPPORT_CONTACT":     "help@acme.example",
		"EMAIL_SIGNATURE":           "<p>Acme</p>",
		"EMAIL_COMPANY_NAME":        "Acme",
		"PROXY_BASE_URL":            "https://llm.acme.example//",
		"EMAIL_INCLUDE_API_KEY":     "False",
		"EMAIL_SUBJECT_INVITATION":  "{company_name}: welcome",
		"EMAIL_SUBJECT_KEY_CREATED": "New key",
		"EMAIL_SUBJECT_KEY_ROTATED": "Rotated",
		"EMAIL_TEMPLATE_DIR":        "/etc/llmspend/email",
	}
	s = SettingsFromEnv(func(k string) string { return env[k] })
	if s.BaseURL != "https://llm.acme.example" || s.IncludeAPIKey || s.CompanyName != "Acme" ||
		s.Signature != "<p>Acme</p>" || s.SubjectInvitation != "{company_name}: welcome" ||
		s.TemplateDir != "/etc/llmspend/email" || s.LogoURL != "https://acme.example/logo.png" ||
		s.SupportContact != "help@acme.example" || s.SubjectKeyCreated != "New key" || s.SubjectKeyRotated != "Rotated" {
		t.Fatalf("overrides not applied: %+v", s)
	}

	for v, want := range map[string]bool{"true": true, "True": true, "1": true, "false": false, "False": false, "0": false, "": true, "garbage": true} {
		s := SettingsFromEnv(func(k string) string {
			if k == "EMAIL_INCLUDE_API_KEY" {
				return v
			}
			return ""
		})
		if s.IncludeAPIKey != want {
			t.Errorf("EMAIL_INCLUDE_API_KEY=%q: got %v, want %v", v, s.IncludeAPIKey, want)
		}
	}
}

func TestSubjects(t *testing.T) {
	s := defaults()
	s.CompanyName = "Acme"
	s.SubjectInvitation = "{company_name}: {event_message} {{literal}}"
	s.SubjectBudgetAlert = "[{company_name}] {event_message}"
	r := newRenderer(t, s)
	inv, err := r.Preview(NameInvitation, "")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Subject != "Acme: New User Invitation {literal}" {
		t.Errorf("invitation subject %q", inv.Subject)
	}
	soft, _ := r.Preview(NameSoftBudget, "")
	if soft.Subject != "[Acme] Soft Budget Crossed - Total Soft Budget: $75.00" {
		t.Errorf("soft subject %q", soft.Subject)
	}
	max, _ := r.Preview(NameMaxBudget, "")
	if max.Subject != "[Acme] Max Budget Alert - 80% of Maximum Budget Reached" {
		t.Errorf("max subject %q", max.Subject)
	}

	d := newRenderer(t, defaults())
	for name, want := range map[string]string{
		NameInvitation: "LiteLLM: New User Invitation",
		NameKeyCreated: "LiteLLM: API Key Created",
		NameKeyRotated: "LiteLLM: API Key Rotated",
		NameSoftBudget: "LiteLLM: Soft Budget Crossed - Total Soft Budget: $75.00",
		NameMaxBudget:  "LiteLLM: Max Budget Alert - 80% of Maximum Budget Reached",
	} {
		out, err := d.Preview(name, "")
		if err != nil || out.Subject != want {
			t.Errorf("%s: subject %q, %v; want %q", name, out.Subject, err, want)
		}
	}
}

func TestSubjectErrors(t *testing.T) {
	cases := []struct {
		set  func(*Settings)
		want []string // all must appear in the error
	}{
		{func(s *Settings) { s.SubjectKeyCreated = "Key for {user_email}" }, []string{"EMAIL_SUBJECT_KEY_CREATED", "{user_email}"}},
		{func(s *Settings) { s.SubjectInvitation = "Hi {event_message" }, []string{"EMAIL_SUBJECT_INVITATION", "unclosed"}},
		{func(s *Settings) { s.SubjectKeyRotated = "a } b" }, []string{"EMAIL_SUBJECT_KEY_ROTATED", "'}'"}},
		{func(s *Settings) { s.SubjectKeyRotated = "Rotated\r\nBcc: victim@example.com" }, []string{"EMAIL_SUBJECT_KEY_ROTATED", "CR or LF"}},
		{func(s *Settings) { s.SubjectInvitation = "Hi\nthere" }, []string{"EMAIL_SUBJECT_INVITATION", "CR or LF"}},
		{func(s *Settings) { s.SubjectBudgetAlert = "{bogus}" }, []string{"EMAIL_SUBJECT_BUDGET_ALERT", "{bogus}"}},
		// CR/LF arriving through a substituted value is refused too.
		{func(s *Settings) { s.CompanyName = "Acme\r\nBcc: x@y"; s.SubjectInvitation = "{company_name}" }, []string{"EMAIL_COMPANY_NAME", "CR or LF"}},
		{func(s *Settings) { s.BaseURL = "javascript:alert(1)" }, []string{"PROXY_BASE_URL"}},
	}
	for _, c := range cases {
		s := defaults()
		c.set(&s)
		_, err := New(s)
		if err == nil {
			t.Errorf("%+v: New succeeded, want error", s)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	// Defense in depth: a substituted value with CR/LF is refused at render.
	p, err := parseSubject("X", "{event_message}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.render("a\r\nBcc: x@y", "c"); err == nil {
		t.Error("CRLF in event message accepted")
	}
}

// liveMarkup parses a document the way a browser would and reports anything
// that could run script: script elements, on* handlers, javascript: or data:
// URLs in href/src.
func liveMarkup(t *testing.T, doc string) []string {
	t.Helper()
	root, err := nethtml.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	var walk func(*nethtml.Node)
	walk = func(n *nethtml.Node) {
		if n.Type == nethtml.ElementNode {
			if n.Data == "script" || n.Data == "iframe" || n.Data == "object" || n.Data == "embed" {
				bad = append(bad, "<"+n.Data+">")
			}
			for _, a := range n.Attr {
				k := strings.ToLower(a.Key)
				v := strings.ToLower(strings.TrimSpace(a.Val))
				if strings.HasPrefix(k, "on") {
					bad = append(bad, k+"="+a.Val)
				}
				if (k == "href" || k == "src") && (strings.HasPrefix(v, "javascript:") || strings.HasPrefix(v, "data:") || strings.HasPrefix(v, "vbscript:")) {
					bad = append(bad, k+"="+a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	return bad
}

func TestUserValuesEscaped(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	const evilEmail = `"><img src=x onerror=alert(1)>@example.com`
	s := defaults()
	s.CompanyName = `Acme <b onmouseover=alert(1)>`
	r := newRenderer(t, s)
	budget := pico(10)
	reset := fixedNow.Add(time.Hour)
	var outs []Rendered
	add := func(o Rendered, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, o)
	}
	add(r.Invitation(InvitationData{RecipientEmail: evilEmail, InvitationLink: r.InvitationLink(`"><script>x</script>`)}))
	add(r.KeyCreated(KeyData{RecipientEmail: evilEmail, Key: evil, KeyAlias: evil, MaxBudget: budget}))
	add(r.KeyRotated(KeyRotatedData{RecipientEmail: evilEmail, Key: evil, KeyAlias: evil, RotatedAt: fixedNow}))
	add(r.SoftBudget(BudgetAlertData{RecipientEmail: evilEmail, KeyAlias: evil, Spend: 9 * money.USD, SoftBudget: pico(8), MaxBudget: budget, ResetAt: &reset}))
	add(r.MaxBudget(BudgetAlertData{RecipientEmail: evilEmail, KeyAlias: evil, Spend: 9 * money.USD, MaxBudget: budget, Percent: 80}))
	for i, o := range outs {
		if strings.Contains(o.HTML, "<script") || strings.Contains(o.HTML, "<img src=x") || strings.Contains(o.HTML, "<b onmouseover") {
			t.Errorf("email %d: raw user markup in HTML", i)
		}
		if i > 0 && !strings.Contains(o.HTML, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("email %d: alias not shown escaped", i)
		}
		if bad := liveMarkup(t, o.HTML); len(bad) > 0 {
			t.Errorf("email %d: live markup %v", i, bad)
		}
		// The text part is plain text: values appear verbatim.
		if i > 0 && !strings.Contains(o.Text, evil) {
			t.Errorf("email %d: text part lost the alias", i)
		}
	}
}

func TestUnsafeLinksNeutralised(t *testing.T) {
	r := newRenderer(t, defaults())
	out, err := r.Invitation(InvitationData{RecipientEmail: "a@b.c", InvitationLink: "javascript:alert(document.cookie)"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.HTML, `href="javascript:`) || !strings.Contains(out.HTML, "#ZgotmplZ") {
		t.Error("javascript: invitation link not neutralised")
	}
	s := defaults()
	s.LogoURL = "javascript:alert(1)"
	r = newRenderer(t, s)
	out, _ = r.Preview(NameKeyCreated, "html")
	if strings.Contains(out.HTML, `src="javascript:`) {
		t.Error("javascript: logo URL not neutralised")
	}
}

func TestBaseURLInLinks(t *testing.T) {
	s := defaults()
	s.BaseURL = "https://llm.acme.example/"
	s.SupportContact = "https://acme.example/help"
	r := newRenderer(t, s)
	if got := r.Settings().BaseURL; got != "https://llm.acme.example" {
		t.Fatalf("BaseURL %q, want trailing slash trimmed", got)
	}
	if got := r.InvitationLink("a b&c"); got != "https://llm.acme.example/ui?invitation_id=a+b%26c" {
		t.Fatalf("InvitationLink %q", got)
	}
	for _, name := range r.Names() {
		out, err := r.Preview(name, "")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.HTML, "0.0.0.0") || strings.Contains(out.Text, "0.0.0.0") {
			t.Errorf("%s: default base URL leaked", name)
		}
		root, _ := nethtml.Parse(strings.NewReader(out.HTML))
		hrefs := 0
		var walk func(*nethtml.Node)
		walk = func(n *nethtml.Node) {
			for _, a := range n.Attr {
				if a.Key == "href" {
					hrefs++
					if !strings.HasPrefix(a.Val, "https://llm.acme.example") && a.Val != "https://acme.example/help" {
						t.Errorf("%s: link %q not built from PROXY_BASE_URL", name, a.Val)
					}
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c)
			}
		}
		walk(root)
		if hrefs < 2 {
			t.Errorf("%s: only %d links", name, hrefs)
		}
	}
	inv, _ := r.Preview(NameInvitation, "")
	want := `href="https://llm.acme.example/ui?invitation_id=7f3c9a52-1e4b-4d8a-9c61-2b5e8f0d4a17"`
	if !strings.Contains(inv.HTML, want) || !strings.Contains(inv.Text, "https://llm.acme.example/ui?invitation_id=7f3c9a52") {
		t.Errorf("invitation link missing: want %s", want)
	}
	kc, _ := r.Preview(NameKeyCreated, "")
	if !strings.Contains(kc.Text, "curl https://llm.acme.example/v1/chat/completions") {
		t.Error("usage example does not use the base URL")
	}
}

func TestIncludeAPIKeyFalse(t *testing.T) {
	s := defaults()
	s.IncludeAPIKey = false
	r := newRenderer(t, s)
	const key = "sk-secret-123456789"
	created, err := r.KeyCreated(KeyData{RecipientEmail: "a@b.c", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := r.KeyRotated(KeyRotatedData{RecipientEmail: "a@b.c", Key: key, RotatedAt: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Rendered{created, rotated} {
		for _, part := range []string{o.HTML, o.Text} {
			if strings.Contains(part, key) {
				t.Error("key leaked with IncludeAPIKey=false")
			}
			if !strings.Contains(part, HiddenKeyPlaceholder) {
				t.Error("placeholder missing")
			}
		}
	}
	// And with the default, the key is there.
	r = newRenderer(t, defaults())
	created, _ = r.KeyCreated(KeyData{RecipientEmail: "a@b.c", Key: key, MaxBudget: pico(25)})
	if !strings.Contains(created.HTML, key) || !strings.Contains(created.Text, key) || strings.Contains(created.Text, HiddenKeyPlaceholder) {
		t.Error("key missing with IncludeAPIKey=true")
	}
	if !strings.Contains(created.Text, "$25.00") {
		t.Error("budget missing")
	}
	created, _ = r.KeyCreated(KeyData{RecipientEmail: "a@b.c", Key: key})
	if !strings.Contains(created.Text, "No budget") || !strings.Contains(created.HTML, "No budget") {
		t.Error(`"No budget" missing`)
	}
}

func TestBudgetVariants(t *testing.T) {
	r := newRenderer(t, defaults())
	// A user with no max budget and no reset: soft alert says so.
	soft, err := r.SoftBudget(BudgetAlertData{RecipientEmail: "u@x.io", EntityKind: "user", Spend: 12 * money.USD, SoftBudget: pico(10)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Your account has spent $12.00", "Does not reset", "None set"} {
		if !strings.Contains(soft.Text, want) {
			t.Errorf("soft text lacks %q:\n%s", want, soft.Text)
		}
	}
	if strings.Contains(soft.Text, "[#") {
		t.Error("meter drawn without a max budget")
	}
	// Missing soft budget: LiteLLM's "N/A".
	soft, _ = r.SoftBudget(BudgetAlertData{Spend: money.USD})
	if soft.Subject != "LiteLLM: Soft Budget Crossed - Total Soft Budget: N/A" {
		t.Errorf("subject %q", soft.Subject)
	}
	// Budget exhausted (the per-key 100% threshold); threshold derived.
	mx, err := r.MaxBudget(BudgetAlertData{RecipientEmail: "u@x.io", KeyAlias: "k1", Spend: 50 * money.USD, MaxBudget: pico(50), Percent: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"has reached its maximum budget", "New requests are rejected", "Alert threshold:  $50.00 (100%)", "Remaining:        $0.00", "[####################] 100%"} {
		if !strings.Contains(mx.Text, want) {
			t.Errorf("max text lacks %q:\n%s", want, mx.Text)
		}
	}
	if mx.Subject != "LiteLLM: Max Budget Alert - 100% of Maximum Budget Reached" {
		t.Errorf("subject %q", mx.Subject)
	}
	// Derived threshold for an odd amount: 75% of $0.33 is exactly $0.2475.
	m := money.Pico(330_000_000_000)
	mx, _ = r.MaxBudget(BudgetAlertData{Spend: m / 2, MaxBudget: &m, Percent: 75})
	if !strings.Contains(mx.Text, "$0.2475") {
		t.Errorf("threshold not derived exactly:\n%s", mx.Text)
	}
}

func TestSignatureInEmail(t *testing.T) {
	s := defaults()
	s.Signature = `<p>Best,<br><strong>Platform Team</strong> · <a href="https://acme.example/llm" onclick="steal()">Docs</a></p><img src=x onerror=alert(1)><script>alert(2)</script><a href="javascript:alert(3)">click</a>`
	r := newRenderer(t, s)
	out, err := r.Preview(NameInvitation, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.HTML, `<strong>Platform Team</strong>`) || !strings.Contains(out.HTML, `<a style="color:#4b5563;text-decoration:underline;" href="https://acme.example/llm">Docs</a>`) {
		t.Errorf("allowed signature markup lost:\n%s", out.HTML)
	}
	if bad := liveMarkup(t, out.HTML); len(bad) > 0 {
		t.Errorf("live markup from signature: %v", bad)
	}
	if !strings.Contains(out.HTML, "&lt;script&gt;alert(2)&lt;/script&gt;") {
		t.Error("script tag not shown as text")
	}
	if !strings.Contains(out.Text, "Best,\nPlatform Team · Docs (https://acme.example/llm)") {
		t.Errorf("text signature:\n%s", out.Text)
	}
	if strings.Contains(out.Text, "The LiteLLM team") {
		t.Error("default sign-off shown despite a signature")
	}
}

func TestSanitizeSignature(t *testing.T) {
	cases := []struct{ in, want string }{
		{`<p>Hi<br/>there</p>`, `<p>Hi<br>there</p>`},
		{`<b>b</b><i>i</i><em>e</em><strong>s</strong>`, `<b>b</b><i>i</i><em>e</em><strong>s</strong>`},
		{`<span style="color:#333;font-weight:600" class="x" id="y">t</span>`, `<span style="color:#333;font-weight:600">t</span>`},
		{`<a href="mailto:ops@acme.example">mail</a>`, `<a href="mailto:ops@acme.example">mail</a>`},
		{`<a href="HTTPS://acme.example/?a=1&amp;b=2">x</a>`, `<a href="HTTPS://acme.example/?a=1&amp;b=2">x</a>`},
		{`<a href="javascript:alert(1)">x</a>`, `<a>x</a>`},
		{`<a href="  JaVaScRiPt:alert(1)">x</a>`, `<a>x</a>`},
		{`<a href="java&#x09;script:alert(1)">x</a>`, `<a>x</a>`},
		{`<a href="data:text/html,<script>alert(1)</script>">x</a>`, `<a>x</a>`},
		{`<a href="/relative">x</a>`, `<a>x</a>`},
		{`<a href="https://ok.example" onclick="x()" target="_blank">x</a>`, `<a href="https://ok.example">x</a>`},
		{`<img src=x onerror=alert(1)>`, `&lt;img src=x onerror=alert(1)&gt;`},
		{`<script>alert(1)</script>`, `&lt;script&gt;alert(1)&lt;/script&gt;`},
		{`<SCRIPT SRC=//evil.example/x.js></SCRIPT>`, `&lt;SCRIPT SRC=//evil.example/x.js&gt;&lt;/SCRIPT&gt;`},
		{`<span style="background:url(javascript:alert(1))">x</span>`, `<span>x</span>`},
		{`<span style="width:expression(alert(1))">x</span>`, `<span>x</span>`},
		{`<p onmouseover="x()">t</p>`, `<p>t</p>`},
		{`<!-- c --><p>t</p>`, `<p>t</p>`},
		{`<a href="https://x.example">open`, `<a href="https://x.example">open</a>`},
		{`text</span></p></td></table>`, `text&lt;/td&gt;&lt;/table&gt;`},
		{`<b><i>x</b>y</i>`, `<b><i>x</i></b>y`},
		{`<A/>x<br/>`, `<a>x<br></a>`},
		{`Tom &amp; Jerry <3`, `Tom &amp; Jerry &lt;3`},
		{``, ``},
	}
	for _, c := range cases {
		if got := string(SanitizeSignature(c.in)); got != c.want {
			t.Errorf("SanitizeSignature(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestStyleLinks(t *testing.T) {
	for in, want := range map[string]string{
		`<a href="https://x.example">x</a>`:              `<a style="` + footerLinkStyle + `" href="https://x.example">x</a>`,
		`<a>x</a><abbr>`:                                 `<a style="` + footerLinkStyle + `">x</a>&lt;abbr&gt;`,
		`<a style="color:red" href="https://x.example">`: `<a style="color:red" href="https://x.example"></a>`,
		`<b>a&lt;a</b>`:                                  `<b>a&lt;a</b>`,
	} {
		if got := string(styleLinks(SanitizeSignature(in))); got != want {
			t.Errorf("styleLinks(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func FuzzSanitizeSignature(f *testing.F) {
	for _, s := range []string{
		`<p>Best,<br><a href="https://x.example">x</a></p>`,
		`<img src=x onerror=alert(1)>`, `<script>alert(1)</script>`,
		`<a href="javascript:alert(1)">x</a>`, `<svg onload=alert(1)>`,
		`<a href="java&#10;script:x">y</a>`, `<span style="x:url(a)">`,
		`<p><b><i>unclosed`, `</p></a><a>`, `<<script>script>`, `<style>*{}</style>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := string(styleLinks(SanitizeSignature(in)))
		// Put it where it goes, in a document, and parse it like a browser.
		doc := "<!DOCTYPE html><html><body><div>" + out + "</div><p>after</p></body></html>"
		if bad := liveMarkup(t, doc); len(bad) > 0 {
			t.Fatalf("live markup %v from %q -> %q", bad, in, out)
		}
		root, err := nethtml.Parse(strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		allowed := map[string]bool{"html": true, "head": true, "body": true, "div": true,
			"p": true, "br": true, "a": true, "b": true, "strong": true, "i": true, "em": true, "span": true}
		var walk func(*nethtml.Node)
		walk = func(n *nethtml.Node) {
			if n.Type == nethtml.TextNode && n.Data == "after" {
				// Balanced output: nothing the signature opens may
				// reach the content after it (browsers reopen unclosed
				// formatting elements there).
				for a := n.Parent; a != nil; a = a.Parent {
					if a.Type == nethtml.ElementNode && a.Data != "p" && a.Data != "body" && a.Data != "html" {
						t.Fatalf("<%s> from the signature wraps later content: %q -> %q", a.Data, in, out)
					}
				}
			}
			if n.Type == nethtml.ElementNode {
				if !allowed[n.Data] {
					t.Fatalf("element <%s> from %q -> %q", n.Data, in, out)
				}
				for _, a := range n.Attr {
					if a.Key != "style" && a.Key != "href" {
						t.Fatalf("attribute %s from %q -> %q", a.Key, in, out)
					}
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c)
			}
		}
		walk(root)
		if again := string(styleLinks(SanitizeSignature(out))); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"LiteLLM: {event_message}", "{company_name}", "{{x}}", "{", "}", "{a}", "a\r\nb"} {
		f.Add(s, "msg")
	}
	f.Fuzz(func(t *testing.T, tpl, msg string) {
		p, err := parseSubject("X", tpl)
		if err != nil {
			return
		}
		out, err := p.render(msg, "Co")
		if err == nil && strings.ContainsAny(out, "\r\n") {
			t.Fatalf("CR/LF in subject %q", out)
		}
	})
}

func TestTemplateDirOverride(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Override one block within the shared layout...
	write("invitation.html", `{{define "content"}}<p>Custom welcome for {{.RecipientEmail}}: <a href="{{.InvitationLink}}">join</a></p>{{end}}{{template "layout" .}}`)
	// ...and replace a text part entirely.
	write("key_created.txt", "KEY {{.Key}} for {{.RecipientEmail}} at {{.BaseURL}}\n")
	write("README.md", "not a template, ignored")
	s := defaults()
	s.TemplateDir = dir
	r := newRenderer(t, s)
	inv, err := r.Invitation(InvitationData{RecipientEmail: "<x>@y.z", InvitationLink: r.InvitationLink("id1")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(inv.HTML, `<p>Custom welcome for &lt;x&gt;@y.z: <a href="http://0.0.0.0:4000/ui?invitation_id=id1">join</a></p>`) {
		t.Errorf("override not used:\n%s", inv.HTML)
	}
	if !strings.Contains(inv.HTML, "Questions? Contact") {
		t.Error("layout lost")
	}
	if !strings.Contains(inv.Text, "You're invited") {
		t.Error("embedded text part not kept")
	}
	kc, err := r.KeyCreated(KeyData{RecipientEmail: "a@b.c", Key: "sk-1"})
	if err != nil {
		t.Fatal(err)
	}
	if kc.Text != "KEY sk-1 for a@b.c at http://0.0.0.0:4000\n" {
		t.Errorf("text override: %q", kc.Text)
	}
}

func TestTemplateDirErrors(t *testing.T) {
	cases := []struct{ file, body, want string }{
		{"invitation.html", `{{define "content"}}{{.RecipientEmail}`, "invitation.html"},
		{"soft_budget.txt", `{{.NoSuchField}}`, "soft_budget.txt"},
		{"layout.html", `{{define "layout"}}{{template "content" .}}{{.Nope}}{{end}}`, "layout.html"},
		{"invitaton.html", `typo`, "invitaton.html"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		s := defaults()
		s.TemplateDir = dir
		_, err := New(s)
		if err == nil {
			t.Errorf("%s: New succeeded, want error", c.file)
			continue
		}
		if !strings.Contains(err.Error(), filepath.Join(dir, c.want)) {
			t.Errorf("%s: error %q does not name the file", c.file, err)
		}
	}
	s := defaults()
	s.TemplateDir = filepath.Join(t.TempDir(), "missing")
	if _, err := New(s); err == nil || !strings.Contains(err.Error(), "EMAIL_TEMPLATE_DIR") {
		t.Errorf("missing dir: %v", err)
	}
}

func TestPreview(t *testing.T) {
	r := newRenderer(t, defaults())
	if got := strings.Join(r.Names(), ","); got != "invitation,key_created,key_rotated,soft_budget,max_budget" {
		t.Fatalf("Names %s", got)
	}
	h, err := r.Preview(NameKeyRotated, "html")
	if err != nil || h.HTML == "" || h.Text != "" || h.Subject == "" {
		t.Errorf("html preview: %v %+v", err, h)
	}
	x, err := r.Preview(NameKeyRotated, "text")
	if err != nil || x.HTML != "" || x.Text == "" {
		t.Errorf("text preview: %v", err)
	}
	if !strings.Contains(x.Text, "Sat, 14 Mar 2026 at 09:26 UTC") || !strings.Contains(x.Text, "old key stopped working immediately") {
		t.Errorf("rotated text:\n%s", x.Text)
	}
	if _, err := r.Invitation(InvitationData{RecipientEmail: "a@b.c"}); err == nil {
		t.Error("invitation without a link accepted")
	}
	if _, err := r.Preview("nope", ""); err == nil {
		t.Error("unknown template accepted")
	}
	if _, err := r.Preview(NameInvitation, "pdf"); err == nil {
		t.Error("unknown format accepted")
	}
}

// HTML structure rules the email clients need; checked on every email so an
// edit cannot quietly reintroduce a <style> block or flexbox.
func TestHTMLEmailRules(t *testing.T) {
	r := newRenderer(t, defaults())
	for _, name := range r.Names() {
		out, _ := r.Preview(name, "html")
		h := out.HTML
		for _, banned := range []string{"display:flex", "display:grid", "<link", "<script", "ZgotmplZ"} {
			if strings.Contains(h, banned) {
				t.Errorf("%s: contains %s", name, banned)
			}
		}
		// One <style>, holding only the phone media query: layout must
		// never depend on it.
		if n := strings.Count(h, "<style"); n != 1 {
			t.Errorf("%s: %d <style> blocks", name, n)
		} else {
			css := h[strings.Index(h, "<style>")+7 : strings.Index(h, "</style>")]
			if !strings.HasPrefix(strings.TrimSpace(css), "@media") || strings.Count(css, "@media") != 1 || strings.Count(css, "{") != 4 {
				t.Errorf("%s: <style> holds more than the phone media query:\n%s", name, css)
			}
		}
		for _, want := range []string{"max-width:600px", `alt="LiteLLM"`, `width="150"`, "-apple-system", "support@berri.ai", `role="presentation"`} {
			if !strings.Contains(h, want) {
				t.Errorf("%s: lacks %s", name, want)
			}
		}
		if n := strings.Count(h, "mso-padding-alt"); n != 1 {
			t.Errorf("%s: %d buttons, want exactly one call to action", name, n)
		}
	}
}

func TestConcurrentRender(t *testing.T) {
	r := newRenderer(t, defaults())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range r.Names() {
				if _, err := r.Preview(n, ""); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkKeyCreated(b *testing.B) {
	r := newRenderer(b, defaults())
	d := KeyData{RecipientEmail: "ada@example.com", Key: "sk-Qm9x4TzV8cW2nLp7RkH3aYdE", KeyAlias: "billing", MaxBudget: pico(100)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.KeyCreated(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMaxBudget(b *testing.B) {
	r := newRenderer(b, defaults())
	reset := fixedNow.Add(24 * time.Hour)
	d := BudgetAlertData{RecipientEmail: "ada@example.com", KeyAlias: "billing", Spend: 81 * money.USD, MaxBudget: pico(100), Percent: 80, ThresholdAmount: 80 * money.USD, ResetAt: &reset}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.MaxBudget(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSanitizeSignature(b *testing.B) {
	sig := `<p>Best,<br><strong>Platform Team</strong> · <a href="https://acme.example/llm">Docs</a></p>`
	b.ReportAllocs()
	for b.Loop() {
		SanitizeSignature(sig)
	}
}
