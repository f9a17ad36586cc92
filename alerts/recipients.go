package alerts

import (
	"errors"
	"fmt"
	"net/mail"
	"sort"
	"strconv"
	"strings"
)

// MetaAlertEmails is the metadata field with per-threshold recipients:
// {"50": ["a@x"], "75": "b@x, c@x", "100": [...]} (LiteLLM's
// max_budget_alert_emails). Its thresholds replace the default max alert.
const MetaAlertEmails = "max_budget_alert_emails"

// ValidateAlertEmails checks a max_budget_alert_emails value as it comes
// from JSON: an object whose keys are whole percents 1..100 and whose
// values are a list of email addresses or one comma-separated string of
// them. nil (JSON null) is accepted and means "none". The error names the
// offending entry.
func ValidateAlertEmails(v any) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("metadata.%s must be an object of percent thresholds to email lists, e.g. {\"80\": [\"a@example.com\"]}", MetaAlertEmails)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic error messages
	for _, k := range keys {
		if _, ok := parsePercent(k); !ok {
			return fmt.Errorf("metadata.%s: threshold %q must be a whole percent from 1 to 100", MetaAlertEmails, k)
		}
		if _, err := parseEmails(m[k]); err != nil {
			return fmt.Errorf("metadata.%s[%q]: %w", MetaAlertEmails, k, err)
		}
	}
	return nil
}

// ThresholdRecipients returns the extra recipients metadata lists for
// threshold pct (nil when none, or when the entry is malformed: metadata
// stored before validation existed must not stop the owner's alert).
func ThresholdRecipients(meta map[string]any, pct int) []string {
	m, ok := meta[MetaAlertEmails].(map[string]any)
	if !ok {
		return nil
	}
	for k, v := range m {
		if p, ok := parsePercent(k); ok && p == pct {
			out, err := parseEmails(v)
			if err != nil {
				return nil
			}
			return out
		}
	}
	return nil
}

// parsePercent accepts only plain digits ("50", not "+50" or " 50").
func parsePercent(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 100 {
		return 0, false
	}
	return n, true
}

var errEmails = errors.New("must be a list of email addresses or a comma-separated string of them")

func parseEmails(v any) ([]string, error) {
	var raw []string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		for _, s := range strings.Split(x, ",") {
			if s = strings.TrimSpace(s); s != "" {
				raw = append(raw, s)
			}
		}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, errEmails
			}
			raw = append(raw, strings.TrimSpace(s))
		}
	case []string: // callers that built the map in Go
		for _, s := range x {
			raw = append(raw, strings.TrimSpace(s))
		}
	default:
		return nil, errEmails
	}
	for _, s := range raw {
		if !ValidEmail(s) {
			return nil, fmt.Errorf("%q is not a valid email address", s)
		}
	}
	return raw, nil
}

// ValidEmail accepts a plain address (local@domain, no display name): no
// spaces, angle brackets, separators or line breaks (which could smuggle
// headers), and one the mailer will accept as a recipient, so an alert is
// never refused at enqueue for an address that passed validation.
func ValidEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if len(s) > 254 || at <= 0 || at >= len(s)-1 || strings.ContainsAny(s, " \t\r\n\x00<>,;\"") {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// mergeRecipients puts owner first and removes duplicates (case-insensitive).
func mergeRecipients(owner string, extra []string, limit int) []string {
	var out []string
	seen := make(map[string]bool)
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" || !ValidEmail(s) {
			return
		}
		k := strings.ToLower(s)
		if seen[k] || len(out) >= limit {
			return
		}
		seen[k] = true
		out = append(out, s)
	}
	add(owner)
	for _, e := range extra {
		add(e)
	}
	return out
}
