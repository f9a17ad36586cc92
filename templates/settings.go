package templates

import (
	"fmt"
	"strings"
)

// Defaults, matching LiteLLM so that an llmspend deployment configured with
// the same environment sends the same subjects and branding.
const (
	// DefaultLogoURL is LiteLLM's hosted logo (LITELLM_LOGO_URL in LiteLLM).
	// It is an https URL rather than an embedded data: URI because Gmail and
	// Outlook block data: images; a deployment sets EMAIL_LOGO_URL to its own.
	DefaultLogoURL            = "https://litellm-listing.s3.amazonaws.com/litellm_logo.png"
	DefaultSupportContact     = "support@berri.ai"
	DefaultCompanyName        = "LiteLLM"
	DefaultBaseURL            = "http://0.0.0.0:4000"
	DefaultSubjectInvitation  = "LiteLLM: New User Invitation"
	DefaultSubjectKeyCreated  = "LiteLLM: API Key Created"
	DefaultSubjectKeyRotated  = "LiteLLM: API Key Rotated"
	DefaultSubjectBudgetAlert = "LiteLLM: {event_message}"

	// HiddenKeyPlaceholder replaces the key when EMAIL_INCLUDE_API_KEY=false
	// (LiteLLM's exact wording).
	HiddenKeyPlaceholder = "[Key hidden for security - retrieve from dashboard]"
)

// Event messages substituted for {event_message} in the fixed-event subjects,
// chosen so that "LiteLLM: {event_message}" gives LiteLLM's default subjects.
const (
	EventInvitation = "New User Invitation"
	EventKeyCreated = "API Key Created"
	EventKeyRotated = "API Key Rotated"
)

// Settings configures branding, links and subjects of every email.
type Settings struct {
	LogoURL        string // EMAIL_LOGO_URL
	SupportContact string // EMAIL_SUPPORT_CONTACT: an address, a URL or free text
	Signature      string // EMAIL_SIGNATURE: raw HTML, sanitised by New
	CompanyName    string // EMAIL_COMPANY_NAME, for {company_name}
	BaseURL        string // PROXY_BASE_URL, no trailing slash
	IncludeAPIKey  bool   // EMAIL_INCLUDE_API_KEY

	SubjectInvitation string // EMAIL_SUBJECT_INVITATION
	SubjectKeyCreated string // EMAIL_SUBJECT_KEY_CREATED
	SubjectKeyRotated string // EMAIL_SUBJECT_KEY_ROTATED
	// SubjectBudgetAlert is the subject template of soft and max budget
	// alerts (EMAIL_SUBJECT_BUDGET_ALERT, an llmspend addition; LiteLLM
	// hard-codes "LiteLLM: {event_message}").
	SubjectBudgetAlert string

	// TemplateDir, when set, holds override files named <name>.html,
	// <name>.txt, or layout/parts .html/.txt for the shared frame and
	// building blocks (EMAIL_TEMPLATE_DIR).
	TemplateDir string
}

// envVars names the variable behind each subject so that startup errors tell
// the operator what to fix.
const (
	envSubjectInvitation  = "EMAIL_SUBJECT_INVITATION"
	envSubjectKeyCreated  = "EMAIL_SUBJECT_KEY_CREATED"
	envSubjectKeyRotated  = "EMAIL_SUBJECT_KEY_ROTATED"
	envSubjectBudgetAlert = "EMAIL_SUBJECT_BUDGET_ALERT"
	envCompanyName        = "EMAIL_COMPANY_NAME"
)

// SettingsFromEnv reads the LiteLLM-compatible environment variables through
// getenv (os.Getenv, or a map lookup in tests). Empty or unset variables take
// the defaults above. It never fails: validation (subject placeholders,
// CR/LF) happens in New, which reports the offending variable.
func SettingsFromEnv(getenv func(string) string) Settings {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	s := Settings{
		LogoURL:            get("EMAIL_LOGO_URL", DefaultLogoURL),
		SupportContact:     get("EMAIL_SUPPORT_CONTACT", DefaultSupportContact),
		Signature:          getenv("EMAIL_SIGNATURE"),
		CompanyName:        get(envCompanyName, DefaultCompanyName),
		BaseURL:            get("PROXY_BASE_URL", DefaultBaseURL),
		IncludeAPIKey:      parseBool(getenv("EMAIL_INCLUDE_API_KEY"), true),
		SubjectInvitation:  get(envSubjectInvitation, DefaultSubjectInvitation),
		SubjectKeyCreated:  get(envSubjectKeyCreated, DefaultSubjectKeyCreated),
		SubjectKeyRotated:  get(envSubjectKeyRotated, DefaultSubjectKeyRotated),
		SubjectBudgetAlert: get(envSubjectBudgetAlert, DefaultSubjectBudgetAlert),
		TemplateDir:        get("EMAIL_TEMPLATE_DIR", ""),
	}
	s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	return s
}

// parseBool accepts the spellings LiteLLM users write (Python's str(True) is
// "True"); anything unrecognised keeps the default rather than silently
// flipping a security-relevant switch.
func parseBool(v string, def bool) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	return def
}

// withDefaults fills fields a caller left empty when building Settings by
// hand, so that Settings{} renders like an unconfigured LiteLLM.
func (s Settings) withDefaults() Settings {
	def := func(p *string, v string) {
		if strings.TrimSpace(*p) == "" {
			*p = v
		}
	}
	def(&s.LogoURL, DefaultLogoURL)
	def(&s.SupportContact, DefaultSupportContact)
	def(&s.CompanyName, DefaultCompanyName)
	def(&s.BaseURL, DefaultBaseURL)
	def(&s.SubjectInvitation, DefaultSubjectInvitation)
	def(&s.SubjectKeyCreated, DefaultSubjectKeyCreated)
	def(&s.SubjectKeyRotated, DefaultSubjectKeyRotated)
	def(&s.SubjectBudgetAlert, DefaultSubjectBudgetAlert)
	s.BaseURL = strings.TrimRight(strings.TrimSpace(s.BaseURL), "/")
	return s
}

// subject is a parsed subject template: literal text and placeholders.
type subject struct {
	parts []subjectPart
}

type subjectPart struct {
	lit         string
	placeholder string // "event_message" or "company_name"; lit unused then
}

var knownPlaceholders = map[string]bool{"event_message": true, "company_name": true}

// parseSubject parses a subject template with Python str.format syntax, the
// syntax LiteLLM users already write: {name} is a placeholder, {{ and }} are
// literal braces. Unlike LiteLLM, which raises KeyError at send time and
// drops the email, an unknown placeholder is reported here, at startup.
func parseSubject(envVar, tpl string) (subject, error) {
	if strings.ContainsAny(tpl, "\r\n") {
		return subject{}, fmt.Errorf("%s: subject contains a CR or LF character", envVar)
	}
	var s subject
	var lit strings.Builder
	for i := 0; i < len(tpl); i++ {
		c := tpl[i]
		switch c {
		case '{':
			if i+1 < len(tpl) && tpl[i+1] == '{' {
				lit.WriteByte('{')
				i++
				continue
			}
			end := strings.IndexByte(tpl[i+1:], '}')
			if end < 0 {
				return subject{}, fmt.Errorf("%s: unclosed '{' in subject %q (write {{ for a literal brace)", envVar, tpl)
			}
			name := tpl[i+1 : i+1+end]
			if !knownPlaceholders[name] {
				return subject{}, fmt.Errorf("%s: unknown placeholder {%s} in subject %q (supported: {event_message}, {company_name})", envVar, name, tpl)
			}
			if lit.Len() > 0 {
				s.parts = append(s.parts, subjectPart{lit: lit.String()})
				lit.Reset()
			}
			s.parts = append(s.parts, subjectPart{placeholder: name})
			i += end + 1
		case '}':
			if i+1 < len(tpl) && tpl[i+1] == '}' {
				lit.WriteByte('}')
				i++
				continue
			}
			return subject{}, fmt.Errorf("%s: single '}' in subject %q (write }} for a literal brace)", envVar, tpl)
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		s.parts = append(s.parts, subjectPart{lit: lit.String()})
	}
	return s, nil
}

// render substitutes the placeholders. The result is a mail header value, so
// CR and LF are refused even when they come from a substituted value:
// a header injection must never reach the mailer.
func (s subject) render(eventMessage, companyName string) (string, error) {
	var b strings.Builder
	for _, p := range s.parts {
		switch p.placeholder {
		case "":
			b.WriteString(p.lit)
		case "event_message":
			b.WriteString(eventMessage)
		case "company_name":
			b.WriteString(companyName)
		}
	}
	out := b.String()
	if strings.ContainsAny(out, "\r\n") {
		return "", fmt.Errorf("subject %q contains a CR or LF character", out)
	}
	return out, nil
}
