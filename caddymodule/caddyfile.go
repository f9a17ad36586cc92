package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/llmspend/llmspend/spend"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("llm_spend", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("llm_spend", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("llm_spend", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("llm_spend_admin", parseAdminHandler)
	httpcaddyfile.RegisterDirectiveOrder("llm_spend_admin", httpcaddyfile.Before, "respond")
}

// parseGlobalOption configures the llm_spend app from the global options:
//
//	{
//	    llm_spend {
//	        master_key       <key>
//	        store            [<sqlite path> | <postgres:// url>]
//	        admin_max_body   <bytes>
//	        max_request_body <bytes>
//	    }
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("llm_spend global option specified more than once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "llm_spend", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] && opt != "price" {
			return d.Errf("llm_spend: %s already specified", opt)
		}
		seen[opt] = true
		switch opt {
		case "master_key":
			// An empty environment variable leaves no argument: that is
			// allowed and means "admin API disabled".
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.ArgErr()
			}
			if len(args) == 1 {
				a.MasterKey = args[0]
			}
		case "store":
			if err := a.parseStore(d); err != nil {
				return err
			}
		case "admin_max_body", "max_request_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(d.Val(), 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("llm_spend: %s must be a positive number of bytes, got %q", opt, d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if opt == "admin_max_body" {
				a.AdminMaxBody = n
			} else {
				a.MaxRequestBody = n
			}
		case "email":
			if err := a.parseEmail(d); err != nil {
				return err
			}
		case "templates":
			if err := a.parseTemplates(d); err != nil {
				return err
			}
		case "alerts":
			if err := a.parseAlerts(d); err != nil {
				return err
			}
		case "redis":
			if err := a.parseRedis(d); err != nil {
				return err
			}
		case "prices_file":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			a.PricesFile = v
		case "price":
			if err := a.parsePrice(d); err != nil {
				return err
			}
		default:
			return d.Errf("llm_spend: unrecognized option '%s'", opt)
		}
	}
	return nil
}

// oneArg reads exactly one argument for the current sub-option.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// optArg reads zero or one argument: an empty environment variable leaves
// none, which means "not set here".
func optArg(d *caddyfile.Dispenser) (string, error) {
	args := d.RemainingArgs()
	if len(args) > 1 {
		return "", d.ArgErr()
	}
	if len(args) == 0 {
		return "", nil
	}
	return args[0], nil
}

// parsePrice parses one model's price in USD per 1M tokens:
//
//	price <model> {
//	    input       <usd per 1M>
//	    output      <usd per 1M>
//	    cache_read  <usd per 1M>
//	    cache_write <usd per 1M>
//	}
func (a *App) parsePrice(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	model := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if _, dup := a.Prices[model]; dup {
		return d.Errf("llm_spend: price for %q already specified", model)
	}
	var pc PriceConfig
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		field := d.Val()
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		if _, perr := spend.PerMillion(v); perr != nil {
			return d.Errf("llm_spend: price %s %s: %v", model, field, perr)
		}
		switch field {
		case "input":
			pc.Input = v
		case "output":
			pc.Output = v
		case "cache_read":
			pc.CacheRead = v
		case "cache_write":
			pc.CacheWrite = v
		default:
			return d.Errf("llm_spend: unrecognized price field '%s' (input, output, cache_read, cache_write)", field)
		}
	}
	if a.Prices == nil {
		a.Prices = map[string]PriceConfig{}
	}
	a.Prices[model] = pc
	return nil
}

// parseEmail parses
//
//	email [smtp|resend|sendgrid|log] {
//	    from          <address>
//	    smtp_host     <host>
//	    smtp_port     <port>
//	    smtp_tls      True|False
//	    smtp_username <user>
//	    smtp_password <password>
//	    api_key       <Resend or SendGrid key>
//	    base_url      <Resend or SendGrid API base URL>
//	    workers       <n>
//	    queue_len     <n>
//	    max_attempts  <n>
//	    base_backoff  <duration>
//	    drain_timeout <duration>
//	}
func (a *App) parseEmail(d *caddyfile.Dispenser) error {
	e := new(EmailConfig)
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		switch args[0] {
		case "smtp", "resend", "sendgrid", "log":
			e.Backend = args[0]
		default:
			return d.Errf("llm_spend: email backend must be smtp, resend, sendgrid or log, got %q", args[0])
		}
	default:
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "from":
			e.From, err = optArg(d)
		case "smtp_host":
			e.SMTPHost, err = optArg(d)
		case "smtp_tls":
			e.SMTPTLS, err = optArg(d)
		case "smtp_username":
			e.SMTPUsername, err = optArg(d)
		case "smtp_password":
			e.SMTPPassword, err = optArg(d)
		case "api_key":
			e.APIKey, err = optArg(d)
		case "base_url":
			e.BaseURL, err = optArg(d)
		case "smtp_port", "workers", "queue_len", "max_attempts":
			var v string
			if v, err = oneArg(d); err != nil {
				return err
			}
			n, perr := strconv.Atoi(v)
			if perr != nil || n <= 0 || (opt == "smtp_port" && n > 65535) {
				return d.Errf("llm_spend: email %s must be a positive integer, got %q", opt, v)
			}
			switch opt {
			case "smtp_port":
				e.SMTPPort = n
			case "workers":
				e.Workers = n
			case "queue_len":
				e.QueueLen = n
			case "max_attempts":
				e.MaxAttempts = n
			}
		case "base_backoff", "drain_timeout":
			var v string
			if v, err = oneArg(d); err != nil {
				return err
			}
			dur, perr := caddy.ParseDuration(v)
			if perr != nil || dur <= 0 {
				return d.Errf("llm_spend: email %s must be a positive duration, got %q", opt, v)
			}
			if opt == "base_backoff" {
				e.BaseBackoff = caddy.Duration(dur)
			} else {
				e.DrainTimeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("llm_spend: unrecognized email option '%s'", opt)
		}
		if err != nil {
			return err
		}
	}
	a.Email = e
	return nil
}

// parseTemplates parses
//
//	templates {
//	    dir                 <folder of overrides>
//	    logo_url            <url>
//	    support_contact     <address or url>
//	    signature           <html>
//	    company_name        <name>
//	    base_url            <PROXY_BASE_URL>
//	    include_api_key     true|false
//	    subject_invitation  <subject>
//	    subject_key_created <subject>
//	    subject_key_rotated <subject>
//	}
func (a *App) parseTemplates(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	t := new(TemplateConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		v, err := optArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "dir":
			t.Dir = v
		case "logo_url":
			t.LogoURL = v
		case "support_contact":
			t.SupportContact = v
		case "signature":
			t.Signature = v
		case "company_name":
			t.CompanyName = v
		case "base_url":
			t.BaseURL = v
		case "subject_invitation":
			t.SubjectInvitation = v
		case "subject_key_created":
			t.SubjectKeyCreated = v
		case "subject_key_rotated":
			t.SubjectKeyRotated = v
		case "include_api_key":
			if v == "" {
				continue
			}
			b, perr := strconv.ParseBool(v)
			if perr != nil {
				return d.Errf("llm_spend: templates include_api_key must be true or false, got %q", v)
			}
			t.IncludeAPIKey = &b
		default:
			return d.Errf("llm_spend: unrecognized templates option '%s'", opt)
		}
	}
	a.Templates = t
	return nil
}

// parseHandler parses the llm_spend directive:
//
//	llm_spend
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		return d.Errf("llm_spend: unrecognized option '%s'", d.Val())
	}
	return nil
}

// parseAdminHandler parses the llm_spend_admin directive:
//
//	llm_spend_admin
func parseAdminHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(AdminHandler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the admin handler from Caddyfile tokens.
func (h *AdminHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		return d.Errf("llm_spend_admin: unrecognized option '%s'", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*AdminHandler)(nil)
)
