package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
		if seen[opt] {
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
			args := d.RemainingArgs()
			if len(args) > 1 {
				return d.ArgErr()
			}
			if len(args) == 1 {
				a.Store = args[0]
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
		default:
			return d.Errf("llm_spend: unrecognized option '%s'", opt)
		}
	}
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
