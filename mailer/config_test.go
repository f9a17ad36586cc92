package mailer

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnvReadsEveryVariable(t *testing.T) {
	vars := map[string]string{
		"SMTP_HOST": "smtp.example.com", "SMTP_PORT": "2525", "SMTP_TLS": "False",
		"SMTP_USERNAME": "u", "SMTP_PASSWORD": "p ", "SMTP_SENDER_EMAIL": "s@example.com",
		"RESEND_API_KEY": "re_x", "RESEND_SENDER_EMAIL": "r@example.com", "RESEND_BASE_URL": "http://relay:1",
		"SENDGRID_API_KEY": "SG.x", "SENDGRID_SENDER_EMAIL": "g@example.com", "SENDGRID_BASE_URL": "http://relay:2",
	}
	var asked []string
	c := ConfigFromEnv(func(k string) string { asked = append(asked, k); return vars[k] })
	want := SMTPConfig{Host: "smtp.example.com", Port: 2525, TLS: "False", Username: "u", Password: "p ", SenderEmail: "s@example.com"}
	if c.SMTP != want {
		t.Errorf("smtp %+v", c.SMTP)
	}
	if c.Resend.APIKey != "re_x" || c.Resend.SenderEmail != "r@example.com" || c.Resend.BaseURL != "http://relay:1" {
		t.Errorf("resend %+v", c.Resend)
	}
	if c.SendGrid.APIKey != "SG.x" || c.SendGrid.SenderEmail != "g@example.com" || c.SendGrid.BaseURL != "http://relay:2" {
		t.Errorf("sendgrid %+v", c.SendGrid)
	}
	for _, k := range asked {
		if _, ok := vars[k]; !ok {
			t.Errorf("reads unexpected variable %s", k)
		}
	}
	if len(asked) != len(vars) {
		t.Errorf("read %d variables, want %d: %v", len(asked), len(vars), asked)
	}
}

func TestActiveBackendAutomaticChoice(t *testing.T) {
	cases := []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{}, BackendLog},
		{map[string]string{"SENDGRID_API_KEY": "k"}, BackendSendGrid},
		{map[string]string{"SENDGRID_API_KEY": "k", "RESEND_API_KEY": "k"}, BackendResend},
		{map[string]string{"SENDGRID_API_KEY": "k", "RESEND_API_KEY": "k", "SMTP_HOST": "h"}, BackendSMTP},
		{map[string]string{"SMTP_USERNAME": "u"}, BackendLog},
	}
	for _, tc := range cases {
		c := ConfigFromEnv(env(tc.vars))
		if got := c.ActiveBackend(); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.vars, got, tc.want)
		}
		if c.Configured() != (tc.want != BackendLog) {
			t.Errorf("%v: Configured %v", tc.vars, c.Configured())
		}
	}
	c := ConfigFromEnv(env(map[string]string{"SMTP_HOST": "h"}))
	c.Backend = "Resend" // the Caddyfile wins
	if c.ActiveBackend() != BackendResend {
		t.Errorf("explicit backend ignored: %s", c.ActiveBackend())
	}
}

func TestValidateNamesMissingVariable(t *testing.T) {
	cases := []struct {
		vars    map[string]string
		backend string
		want    string
	}{
		{map[string]string{"SMTP_HOST": "h"}, "", "SMTP_SENDER_EMAIL is required when the smtp email backend is active"},
		{map[string]string{"RESEND_API_KEY": "k"}, "", "RESEND_SENDER_EMAIL is required when the resend email backend is active"},
		{map[string]string{"SENDGRID_API_KEY": "k"}, "", "SENDGRID_SENDER_EMAIL is required when the sendgrid email backend is active"},
		{map[string]string{}, "smtp", "SMTP_HOST is required"},
		{map[string]string{}, "resend", "RESEND_API_KEY is required"},
		{map[string]string{"SMTP_HOST": "h", "SMTP_SENDER_EMAIL": "a@b.c", "SMTP_PORT": "x"}, "", "SMTP_PORT"},
		{map[string]string{"SMTP_HOST": "h", "SMTP_SENDER_EMAIL": "a@b.c", "SMTP_TLS": "maybe"}, "", "SMTP_TLS"},
		{map[string]string{"SMTP_HOST": "h", "SMTP_SENDER_EMAIL": "not an address"}, "", "SMTP_SENDER_EMAIL"},
		{map[string]string{"SMTP_HOST": "h", "SMTP_SENDER_EMAIL": "a@b.c\r\nBcc: x@y.z"}, "", "CR, LF"},
		{map[string]string{"RESEND_API_KEY": "k", "RESEND_SENDER_EMAIL": "a@b.c", "RESEND_BASE_URL": "ftp://x"}, "", "RESEND_BASE_URL"},
		{map[string]string{}, "pigeon", "unknown email backend"},
	}
	for _, tc := range cases {
		c := ConfigFromEnv(env(tc.vars))
		c.Backend = tc.backend
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %q: err %v, want %q", tc.vars, tc.backend, err, tc.want)
		}
		if _, err := NewSender(c, nil); err == nil {
			t.Errorf("%v: NewSender accepted an invalid config", tc.vars)
		}
	}
	// The Caddyfile's from address satisfies the requirement.
	c := ConfigFromEnv(env(map[string]string{"SMTP_HOST": "h"}))
	c.From = "LiteLLM <n@example.com>"
	if err := c.Validate(); err != nil {
		t.Errorf("with From: %v", err)
	}
}

func TestNewSenderPicksBackend(t *testing.T) {
	cases := []struct {
		vars map[string]string
		want string
		from string
	}{
		{map[string]string{}, BackendLog, "llmspend@localhost"},
		{map[string]string{"SMTP_HOST": "h", "SMTP_SENDER_EMAIL": "s@x.y"}, BackendSMTP, "s@x.y"},
		{map[string]string{"RESEND_API_KEY": "k", "RESEND_SENDER_EMAIL": "r@x.y"}, BackendResend, "r@x.y"},
		{map[string]string{"SENDGRID_API_KEY": "k", "SENDGRID_SENDER_EMAIL": "g@x.y"}, BackendSendGrid, "g@x.y"},
	}
	for _, tc := range cases {
		s, err := NewSender(ConfigFromEnv(env(tc.vars)), zap.NewNop())
		if err != nil {
			t.Fatalf("%v: %v", tc.vars, err)
		}
		if s.Name() != tc.want || s.From() != tc.from {
			t.Errorf("%v: %s from %s", tc.vars, s.Name(), s.From())
		}
	}
}

func TestEffectiveTLS(t *testing.T) {
	cases := map[string]string{
		"": TLSStartTLS, "True": TLSStartTLS, "true": TLSStartTLS, "False": TLSNone, "false": TLSNone,
		"starttls": TLSStartTLS, "implicit": TLSImplicit, "none": TLSNone, "opportunistic": TLSOpportunistic,
	}
	for in, want := range cases {
		got, err := SMTPConfig{Host: "h", TLS: in}.EffectiveTLS()
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
}
