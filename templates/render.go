// Package templates renders llmspend's notification emails: invitation, key
// created, key rotated, soft budget and max budget alerts, each as an HTML
// part (table layout, inline CSS, for Gmail, Outlook and Apple Mail) and a
// plain-text part, with LiteLLM-compatible subjects and settings.
//
// Templates are embedded; an operator can override any of them by name from
// Settings.TemplateDir (<name>.html, <name>.txt, and layout/parts for the
// shared frame and building blocks). Every override is parsed and trial-rendered in New so
// a broken template is a startup error, never a dropped email.
package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/llmspend/llmspend/money"
)

//go:embed tmpl/*.html tmpl/*.txt
var embedded embed.FS

// Template names, in the order Names returns them.
const (
	NameInvitation = "invitation"
	NameKeyCreated = "key_created"
	NameKeyRotated = "key_rotated"
	NameSoftBudget = "soft_budget"
	NameMaxBudget  = "max_budget"
)

var names = []string{NameInvitation, NameKeyCreated, NameKeyRotated, NameSoftBudget, NameMaxBudget}

// layoutName is the shared frame (logo, card, footer) every email calls;
// partsName holds the building blocks (button, rows, code box...).
const (
	layoutName = "layout"
	partsName  = "parts"
)

// Rendered is one email ready for a mailer.
type Rendered struct {
	Subject string
	HTML    string
	Text    string
}

// InvitationData describes a new-user invitation.
type InvitationData struct {
	RecipientEmail string
	InvitationLink string    // see Renderer.InvitationLink
	ExpiresAt      time.Time // zero: not shown
}

// KeyData describes a newly created key.
type KeyData struct {
	RecipientEmail string
	Key            string // replaced by HiddenKeyPlaceholder when IncludeAPIKey is false
	KeyAlias       string
	MaxBudget      *money.Pico // nil: "No budget"
	UserID         string
}

// KeyRotatedData describes a key rotation; Key is the new key.
type KeyRotatedData struct {
	RecipientEmail string
	Key            string
	KeyAlias       string
	MaxBudget      *money.Pico
	UserID         string
	RotatedAt      time.Time
}

// BudgetAlertData describes a soft or max budget crossing.
type BudgetAlertData struct {
	RecipientEmail  string
	KeyAlias        string
	EntityKind      string // "key" or "user"
	Spend           money.Pico
	MaxBudget       *money.Pico
	SoftBudget      *money.Pico
	Percent         int        // max alert threshold crossed, e.g. 80
	ThresholdAmount money.Pico // MaxBudget × Percent / 100
	ResetAt         *time.Time // nil: the budget does not reset
}

// Renderer renders the five emails. It is safe for concurrent use: parsed
// templates are only executed after New returns.
type Renderer struct {
	s         Settings
	signature htmltemplate.HTML
	sigText   string
	subjects  map[string]subject
	html      map[string]*htmltemplate.Template
	text      map[string]*texttemplate.Template
	now       func() time.Time // sample data clock; fixed in tests
}

// New validates s (empty fields take the LiteLLM defaults, except
// IncludeAPIKey: build Settings with SettingsFromEnv to get its default of
// true; a hand-made Settings{} keeps keys out of emails), parses the embedded templates and the overrides found in
// s.TemplateDir, and trial-renders every template with sample data, so that
// any mistake (unknown subject placeholder, CR/LF in a subject, a template
// that does not parse or refers to a missing field) fails startup with an
// error that names the variable or the file.
func New(s Settings) (*Renderer, error) {
	s = s.withDefaults()
	if strings.ContainsAny(s.CompanyName, "\r\n") {
		return nil, fmt.Errorf("%s: contains a CR or LF character", envCompanyName)
	}
	if u, err := url.Parse(s.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("PROXY_BASE_URL: %q is not an absolute http(s) URL", s.BaseURL)
	}
	r := &Renderer{
		s:        s,
		subjects: map[string]subject{},
		html:     map[string]*htmltemplate.Template{},
		text:     map[string]*texttemplate.Template{},
		now:      time.Now,
	}
	r.signature = styleLinks(SanitizeSignature(s.Signature))
	r.sigText = signatureText(r.signature)

	for _, sub := range []struct{ key, env, tpl, event string }{
		{NameInvitation, envSubjectInvitation, s.SubjectInvitation, EventInvitation},
		{NameKeyCreated, envSubjectKeyCreated, s.SubjectKeyCreated, EventKeyCreated},
		{NameKeyRotated, envSubjectKeyRotated, s.SubjectKeyRotated, EventKeyRotated},
		{"budget", envSubjectBudgetAlert, s.SubjectBudgetAlert, "Max Budget Alert - 80% of Maximum Budget Reached"},
	} {
		p, err := parseSubject(sub.env, sub.tpl)
		if err != nil {
			return nil, err
		}
		if _, err := p.render(sub.event, s.CompanyName); err != nil {
			return nil, fmt.Errorf("%s: %w", sub.env, err)
		}
		r.subjects[sub.key] = p
	}

	src, err := loadSources(s.TemplateDir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		// Parse order matters: the email file comes last so that its
		// own {{define}}s win over any in the shared files.
		h := htmltemplate.New(name).Funcs(htmlFuncs)
		for _, f := range []string{partsName, layoutName, name} {
			if _, err := h.New(f + ".html").Parse(src[f+".html"].text); err != nil {
				return nil, src[f+".html"].errorf(err)
			}
		}
		r.html[name] = h

		t := texttemplate.New(name).Funcs(textFuncs)
		for _, f := range []string{partsName, layoutName, name} {
			if _, err := t.New(f + ".txt").Parse(src[f+".txt"].text); err != nil {
				return nil, src[f+".txt"].errorf(err)
			}
		}
		r.text[name] = t
	}

	// Trial render: html/template escapes lazily on first execution, and a
	// field that does not exist only fails at execution, so do it now.
	for _, name := range names {
		if _, err := r.Preview(name, ""); err != nil {
			var pe partError
			if errors.As(err, &pe) {
				// Blame the shared file when the failure is inside it
				// (exec errors read "template: layout.html:12:3: ...").
				file := name + pe.ext
				for _, shared := range []string{layoutName, partsName} {
					if strings.Contains(pe.err.Error(), shared+pe.ext+":") {
						file = shared + pe.ext
					}
				}
				return nil, src[file].errorf(pe.err)
			}
			return nil, fmt.Errorf("email template %s: %w", name, err)
		}
	}
	return r, nil
}

// source is one template file's text and where it came from, for errors.
type source struct {
	text string
	path string // "embedded:tmpl/x.html" or the override's path
}

type fileError struct {
	path string
	err  error
}

func (e fileError) Error() string { return fmt.Sprintf("email template %s: %v", e.path, e.err) }
func (e fileError) Unwrap() error { return e.err }

func (s source) errorf(err error) error { return fileError{path: s.path, err: err} }

// partError tells which part (.html or .txt) of an email failed to execute.
type partError struct {
	ext string
	err error
}

func (e partError) Error() string { return e.err.Error() }
func (e partError) Unwrap() error { return e.err }

// loadSources reads the embedded templates, then replaces them with the files
// in dir. A file in dir that matches no template is refused: a typo such as
// "invitaton.html" would otherwise be silently ignored.
func loadSources(dir string) (map[string]source, error) {
	src := map[string]source{}
	known := append([]string{layoutName, partsName}, names...)
	for _, n := range known {
		for _, ext := range []string{".html", ".txt"} {
			b, err := fs.ReadFile(embedded, "tmpl/"+n+ext)
			if err != nil {
				return nil, fmt.Errorf("embedded template %s%s: %w", n, ext, err)
			}
			src[n+ext] = source{text: string(b), path: "embedded:tmpl/" + n + ext}
		}
	}
	if dir == "" {
		return src, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("EMAIL_TEMPLATE_DIR: %w", err)
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".html" && ext != ".txt") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, ok := src[e.Name()]; !ok {
			return nil, fmt.Errorf("email template %s: unknown template name (want one of %s with .html or .txt)", p, strings.Join(known, ", "))
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("email template %s: %w", p, err)
		}
		src[e.Name()] = source{text: string(b), path: p}
	}
	return src, nil
}

// Names lists the templates Preview accepts.
func (r *Renderer) Names() []string { return append([]string(nil), names...) }

// Settings returns the settings in effect, defaults filled in.
func (r *Renderer) Settings() Settings { return r.s }

// InvitationLink builds the link an invitation email carries, the same shape
// as LiteLLM's: {PROXY_BASE_URL}/ui?invitation_id=<id>.
func (r *Renderer) InvitationLink(invitationID string) string {
	return r.s.BaseURL + "/ui?invitation_id=" + url.QueryEscape(invitationID)
}

// Invitation renders the new-user invitation.
func (r *Renderer) Invitation(d InvitationData) (Rendered, error) {
	if strings.TrimSpace(d.InvitationLink) == "" {
		return Rendered{}, errors.New("invitation email without an invitation link")
	}
	subj, err := r.subject(NameInvitation, EventInvitation)
	if err != nil {
		return Rendered{}, err
	}
	v := invitationView{
		common:         r.common(subj, d.RecipientEmail, accentBrand),
		InvitationLink: d.InvitationLink,
		ExpiresAt:      formatTime(d.ExpiresAt),
	}
	v.Preheader = "You've been invited to " + r.s.CompanyName + ". Accept the invitation to get started."
	return r.exec(NameInvitation, subj, v)
}

// KeyCreated renders the new-key email.
func (r *Renderer) KeyCreated(d KeyData) (Rendered, error) {
	subj, err := r.subject(NameKeyCreated, EventKeyCreated)
	if err != nil {
		return Rendered{}, err
	}
	v := keyView{
		common:      r.common(subj, d.RecipientEmail, accentBrand),
		keyInfo:     r.keyInfo(d.Key, d.KeyAlias, d.MaxBudget, d.UserID),
		APIURL:      r.s.BaseURL + "/v1",
		CurlExample: curlExample(r.s.BaseURL),
	}
	v.Preheader = "Your new API key is ready. Budget: " + v.Budget + "."
	return r.exec(NameKeyCreated, subj, v)
}

// KeyRotated renders the key-rotation security notice. A zero RotatedAt
// means now.
func (r *Renderer) KeyRotated(d KeyRotatedData) (Rendered, error) {
	subj, err := r.subject(NameKeyRotated, EventKeyRotated)
	if err != nil {
		return Rendered{}, err
	}
	at := d.RotatedAt
	if at.IsZero() {
		at = r.now()
	}
	v := keyRotatedView{
		keyView: keyView{
			common:      r.common(subj, d.RecipientEmail, accentSecurity),
			keyInfo:     r.keyInfo(d.Key, d.KeyAlias, d.MaxBudget, d.UserID),
			APIURL:      r.s.BaseURL + "/v1",
			CurlExample: curlExample(r.s.BaseURL),
		},
		RotatedAt: formatTime(at),
	}
	v.Preheader = "Security notice: your API key was rotated and the old key no longer works."
	return r.exec(NameKeyRotated, subj, v)
}

// SoftBudget renders the soft budget alert. Its subject's event message is
// LiteLLM's: "Soft Budget Crossed - Total Soft Budget: $<soft>".
func (r *Renderer) SoftBudget(d BudgetAlertData) (Rendered, error) {
	soft := "N/A" // LiteLLM's wording when there is no soft budget
	if d.SoftBudget != nil {
		soft = d.SoftBudget.Dollars()
	}
	subj, err := r.subject(NameSoftBudget, "Soft Budget Crossed - Total Soft Budget: "+soft)
	if err != nil {
		return Rendered{}, err
	}
	v := r.budgetView(subj, d, accentWarning)
	v.Preheader = v.EntityLabel + " has spent " + v.Spend + ", over its soft budget of " + v.SoftBudget + "."
	return r.exec(NameSoftBudget, subj, v)
}

// MaxBudget renders the max budget alert. Its subject's event message is
// LiteLLM's: "Max Budget Alert - <pct>% of Maximum Budget Reached".
func (r *Renderer) MaxBudget(d BudgetAlertData) (Rendered, error) {
	subj, err := r.subject(NameMaxBudget, fmt.Sprintf("Max Budget Alert - %d%% of Maximum Budget Reached", d.Percent))
	if err != nil {
		return Rendered{}, err
	}
	v := r.budgetView(subj, d, accentDanger)
	if v.Exhausted {
		v.Preheader = v.EntityLabel + " has reached its maximum budget of " + v.MaxBudget + "."
	} else {
		v.Preheader = fmt.Sprintf("%s has used %d%% of its maximum budget (%s of %s).", v.EntityLabel, d.Percent, v.Spend, v.MaxBudget)
	}
	return r.exec(NameMaxBudget, subj, v)
}

// Preview renders template name with realistic sample data and nothing sent,
// for GET /email/preview/{template} and the CLI. format is "html" or "text"
// to keep only that part, or "" for both.
func (r *Renderer) Preview(name, format string) (Rendered, error) {
	now := r.now().UTC().Truncate(time.Minute)
	budget := 100 * money.USD
	soft := 75 * money.USD
	reset := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	var out Rendered
	var err error
	switch name {
	case NameInvitation:
		out, err = r.Invitation(InvitationData{
			RecipientEmail: "ada@example.com",
			InvitationLink: r.InvitationLink("7f3c9a52-1e4b-4d8a-9c61-2b5e8f0d4a17"),
			ExpiresAt:      now.Add(7 * 24 * time.Hour),
		})
	case NameKeyCreated:
		out, err = r.KeyCreated(KeyData{
			RecipientEmail: "ada@example.com",
			Key:            "sk-Qm9x4TzV8cW2nLp7RkH3aYdE",
			KeyAlias:       "billing-service-prod",
			MaxBudget:      &budget,
			UserID:         "user-ada",
		})
	case NameKeyRotated:
		out, err = r.KeyRotated(KeyRotatedData{
			RecipientEmail: "ada@example.com",
			Key:            "sk-Jw5rB8uN2kXe6TqG4mZs9PfC",
			KeyAlias:       "billing-service-prod",
			MaxBudget:      &budget,
			UserID:         "user-ada",
			RotatedAt:      now,
		})
	case NameSoftBudget:
		out, err = r.SoftBudget(BudgetAlertData{
			RecipientEmail: "ada@example.com",
			KeyAlias:       "billing-service-prod",
			EntityKind:     "key",
			Spend:          money.Pico(76_420_000_000_000), // $76.42
			MaxBudget:      &budget,
			SoftBudget:     &soft,
			ResetAt:        &reset,
		})
	case NameMaxBudget:
		out, err = r.MaxBudget(BudgetAlertData{
			RecipientEmail:  "ada@example.com",
			KeyAlias:        "billing-service-prod",
			EntityKind:      "key",
			Spend:           money.Pico(81_370_000_000_000), // $81.37
			MaxBudget:       &budget,
			Percent:         80,
			ThresholdAmount: 80 * money.USD,
			ResetAt:         &reset,
		})
	default:
		return Rendered{}, fmt.Errorf("unknown email template %q (have %s)", name, strings.Join(names, ", "))
	}
	if err != nil {
		return Rendered{}, err
	}
	switch format {
	case "":
	case "html":
		out.Text = ""
	case "text", "txt":
		out.HTML = ""
	default:
		return Rendered{}, fmt.Errorf("unknown preview format %q (want html or text)", format)
	}
	return out, nil
}

// Accent colours: brand for routine emails, amber for security notices and
// soft warnings, red when requests are about to be rejected.
const (
	accentBrand    = "#4f46e5"
	accentSecurity = "#d97706"
	accentWarning  = "#d97706"
	accentDanger   = "#dc2626"
)

// common holds what the layout needs; every view embeds it, so an override
// template can use these fields in any email.
type common struct {
	Subject        string
	Preheader      string // inbox preview line
	Accent         string // CSS colour of the card's top border
	CompanyName    string
	LogoURL        string
	BaseURL        string
	DashboardURL   string
	SupportContact string
	SupportURL     string // mailto: or http(s) link for SupportContact, "" if it is neither
	Signature      htmltemplate.HTML
	SignatureText  string
	RecipientEmail string
}

type invitationView struct {
	common
	InvitationLink string
	ExpiresAt      string // "" when unknown
}

type keyInfo struct {
	Key       string // the key, or HiddenKeyPlaceholder
	KeyHidden bool
	KeyAlias  string
	Budget    string // "$100.00" or "No budget"
	UserID    string
}

type keyView struct {
	common
	keyInfo
	APIURL      string // OpenAI-compatible base URL for SDKs: BaseURL + "/v1"
	CurlExample string // a first request with curl, key read from $API_KEY
}

type keyRotatedView struct {
	keyView
	RotatedAt string
}

type budgetView struct {
	common
	KeyAlias     string
	EntityKind   string // "key" or "user"
	EntityLabel  string // "Your API key billing-prod", "Your account"
	Spend        string
	MaxBudget    string // "" when none
	SoftBudget   string // "N/A" when none (LiteLLM's wording)
	HasMax       bool
	Percent      int
	Threshold    string
	Remaining    string // MaxBudget - Spend, floored at $0.00
	BarPercent   int    // spend as a share of MaxBudget, 0..100, for the bar
	Exhausted    bool   // spend >= max budget
	ResetAt      string // "" when the budget does not reset
	DoesNotReset bool
}

func (r *Renderer) common(subject, recipient, accent string) common {
	return common{
		Subject:        subject,
		Accent:         accent,
		CompanyName:    r.s.CompanyName,
		LogoURL:        r.s.LogoURL,
		BaseURL:        r.s.BaseURL,
		DashboardURL:   r.s.BaseURL,
		SupportContact: r.s.SupportContact,
		SupportURL:     supportURL(r.s.SupportContact),
		Signature:      r.signature,
		SignatureText:  r.sigText,
		RecipientEmail: recipient,
	}
}

func (r *Renderer) keyInfo(key, alias string, max *money.Pico, userID string) keyInfo {
	k := keyInfo{Key: key, KeyAlias: alias, Budget: formatBudget(max), UserID: userID}
	if !r.s.IncludeAPIKey || key == "" {
		k.Key, k.KeyHidden = HiddenKeyPlaceholder, true
	}
	return k
}

func (r *Renderer) budgetView(subject string, d BudgetAlertData, accent string) budgetView {
	v := budgetView{
		common:     r.common(subject, d.RecipientEmail, accent),
		KeyAlias:   d.KeyAlias,
		EntityKind: d.EntityKind,
		Spend:      d.Spend.Dollars(),
		SoftBudget: "N/A",
		Percent:    d.Percent,
	}
	thr := d.ThresholdAmount
	if thr == 0 && d.MaxBudget != nil && d.Percent > 0 {
		// Callers normally pass it; derive it exactly otherwise
		// (split so that a large budget cannot overflow int64).
		m, p := *d.MaxBudget, money.Pico(d.Percent)
		thr = m/100*p + m%100*p/100
	}
	v.Threshold = thr.Dollars()
	if v.EntityKind != "user" {
		v.EntityKind = "key"
	}
	switch {
	case v.EntityKind == "user":
		v.EntityLabel = "Your account"
	case d.KeyAlias != "":
		v.EntityLabel = "Your API key \"" + d.KeyAlias + "\""
	default:
		v.EntityLabel = "Your API key"
	}
	if d.SoftBudget != nil {
		v.SoftBudget = d.SoftBudget.Dollars()
	}
	if d.MaxBudget != nil {
		m := *d.MaxBudget
		v.HasMax = true
		v.MaxBudget = m.Dollars()
		rem := m - d.Spend
		if rem < 0 {
			rem = 0
		}
		v.Remaining = rem.Dollars()
		v.Exhausted = d.Spend >= m
		if m > 0 {
			// Display only: a float ratio cannot overflow where
			// Spend*100 in int64 could.
			p := int(float64(d.Spend) / float64(m) * 100)
			v.BarPercent = min(max(p, 0), 100)
		} else {
			v.BarPercent = 100
		}
	}
	if d.ResetAt != nil && !d.ResetAt.IsZero() {
		v.ResetAt = formatTime(*d.ResetAt)
	} else {
		v.DoesNotReset = true
	}
	return v
}

// subject renders the subject of template name. Both budget alerts share
// one subject template.
func (r *Renderer) subject(name, eventMessage string) (string, error) {
	key := name
	if name == NameSoftBudget || name == NameMaxBudget {
		key = "budget"
	}
	return r.subjects[key].render(eventMessage, r.s.CompanyName)
}

// exec executes both parts of one email.
func (r *Renderer) exec(name, subj string, data any) (Rendered, error) {
	var hb, tb bytes.Buffer
	if err := r.html[name].ExecuteTemplate(&hb, name+".html", data); err != nil {
		return Rendered{}, partError{ext: ".html", err: err}
	}
	if err := r.text[name].ExecuteTemplate(&tb, name+".txt", data); err != nil {
		return Rendered{}, partError{ext: ".txt", err: err}
	}
	return Rendered{Subject: subj, HTML: hb.String(), Text: tidyText(tb.String())}, nil
}

var blankLines = regexp.MustCompile(`\n{3,}`)

// tidyText lets the text templates be written for legibility: trailing
// spaces go, runs of blank lines become one, and the part ends with one
// newline.
func tidyText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r")
	}
	s = strings.Join(lines, "\n")
	s = blankLines.ReplaceAllString(s, "\n\n")
	return strings.Trim(s, "\n") + "\n"
}

func formatBudget(p *money.Pico) string {
	if p == nil {
		return "No budget"
	}
	return p.Dollars()
}

// formatTime shows instants in UTC with the zone spelled out: recipients are
// in many time zones and the server's local zone means nothing to them.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("Mon, 2 Jan 2006 at 15:04 MST")
}

// supportURL links the support contact when it is an address or a web URL.
func supportURL(contact string) string {
	c := strings.TrimSpace(contact)
	if strings.HasPrefix(c, "mailto:") {
		return c
	}
	if u, err := url.Parse(c); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return c
	}
	if at := strings.IndexByte(c, '@'); at > 0 && at < len(c)-1 && !strings.ContainsAny(c, " \t<>\"'(),;:") {
		return "mailto:" + c
	}
	return ""
}

// Arguments of the layout's helper templates, built by the funcs below.
type (
	buttonArgs struct{ URL, Label, Color string }
	rowArgs    struct{ Label, Value string }
	keyboxArgs struct {
		Label, Key string
		Hidden     bool
	}
	noticeArgs struct{ Message, Color, Background, Text string }
	meterArgs  struct {
		Percent int
		Color   string
	}
)

// entityNoun names what a budget belongs to, in a sentence.
func entityNoun(kind string) string {
	if kind == "user" {
		return "account"
	}
	return "API key"
}

var htmlFuncs = htmltemplate.FuncMap{
	"button":     func(url, label, color string) buttonArgs { return buttonArgs{url, label, color} },
	"row":        func(label, value string) rowArgs { return rowArgs{label, value} },
	"keybox":     func(label, key string, hidden bool) keyboxArgs { return keyboxArgs{label, key, hidden} },
	"notice":     func(msg, color, bg, text string) noticeArgs { return noticeArgs{msg, color, bg, text} },
	"meter":      func(pct int, color string) meterArgs { return meterArgs{pct, color} },
	"entityNoun": entityNoun,
	// Outlook for Windows ignores max-width; these conditional comments give
	// it a fixed 600px table. html/template strips comments from template
	// text, so they are emitted as trusted HTML values.
	"msoOpen": func() htmltemplate.HTML {
		return `<!--[if mso]><table role="presentation" align="center" width="600" cellpadding="0" cellspacing="0" border="0"><tr><td><![endif]-->`
	},
	"msoClose": func() htmltemplate.HTML { return `<!--[if mso]></td></tr></table><![endif]-->` },
}

var textFuncs = texttemplate.FuncMap{
	"entityNoun": entityNoun,
	// indent sets a code sample off by four spaces, the plain-text
	// convention for "copy this verbatim".
	"indent": func(s string) string {
		return "    " + strings.ReplaceAll(s, "\n", "\n    ")
	},
	// bar draws the spend meter in text: [##########----------].
	"bar": func(pct int) string {
		pct = min(max(pct, 0), 100)
		n := pct / 5
		return "[" + strings.Repeat("#", n) + strings.Repeat("-", 20-n) + "]"
	},
}

// curlExample is the first request shown in key emails. The key is read
// from $API_KEY rather than pasted in, which is the habit worth teaching.
func curlExample(baseURL string) string {
	return "curl " + baseURL + "/v1/chat/completions \\\n" +
		"  -H \"Authorization: Bearer $API_KEY\" \\\n" +
		"  -H \"Content-Type: application/json\" \\\n" +
		"  -d '{\"model\": \"gpt-4o-mini\",\n" +
		"       \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'"
}
