package caddymodule

import (
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

func TestCaddyfileAdapt(t *testing.T) {
	caddytest.AssertAdapt(t, `{
	llm_spend {
		master_key sk-master-0123456789
		store /var/lib/llmspend/db.sqlite
		admin_max_body 2048
		max_request_body 4096
	}
}
:4000 {
	handle /v1/* {
		llm_spend
		reverse_proxy 127.0.0.1:9999
	}
	handle {
		llm_spend_admin
		respond 404
	}
}
`, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":4000"
					],
					"routes": [
						{
							"group": "group2",
							"match": [
								{
									"path": [
										"/v1/*"
									]
								}
							],
							"handle": [
								{
									"handler": "subroute",
									"routes": [
										{
											"handle": [
												{
													"handler": "llm_spend"
												},
												{
													"handler": "reverse_proxy",
													"upstreams": [
														{
															"dial": "127.0.0.1:9999"
														}
													]
												}
											]
										}
									]
								}
							]
						},
						{
							"group": "group2",
							"handle": [
								{
									"handler": "subroute",
									"routes": [
										{
											"handle": [
												{
													"handler": "llm_spend_admin"
												},
												{
													"handler": "static_response",
													"status_code": 404
												}
											]
										}
									]
								}
							]
						}
					]
				}
			}
		},
		"llm_spend": {
			"master_key": "sk-master-0123456789",
			"store": "/var/lib/llmspend/db.sqlite",
			"admin_max_body": 2048,
			"max_request_body": 4096
		}
	}
}`)
}

// Caddyfile errors name the file and the line.
func TestCaddyfileErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name, input, want string
	}{
		{"unknown global option", "{\n\tllm_spend {\n\t\tmaster_key abcdefghij\n\t\tbogus 1\n\t}\n}\n:4000\n", "Caddyfile:4"},
		{"bad body limit", "{\n\tllm_spend {\n\t\tadmin_max_body lots\n\t}\n}\n:4000\n", "Caddyfile:3"},
		{"duplicate option", "{\n\tllm_spend {\n\t\tstore a.db\n\t\tstore b.db\n\t}\n}\n:4000\n", "Caddyfile:4"},
		{"handler arg", ":4000 {\n\tllm_spend extra\n}\n", "Caddyfile:2"},
		{"handler option", ":4000 {\n\tllm_spend {\n\t\tnope\n\t}\n}\n", "Caddyfile:3"},
		{"admin option", ":4000 {\n\tllm_spend_admin {\n\t\tnope\n\t}\n}\n", "Caddyfile:3"},
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := adapter.Adapt([]byte(c.input), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name %s", err, c.want)
			}
		})
	}
}

// Caddyfile.example adapts as shipped, with and without the optional
// environment, and keeps secrets as runtime placeholders.
func TestCaddyfileExampleAdapts(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MASTER_KEY", "sk-master-secret-value")
	for _, env := range []map[string]string{
		{},
		{"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test", "REDIS_URL": "redis://127.0.0.1:6379/0", "PORT": "4100"},
	} {
		for k, v := range env {
			t.Setenv(k, v)
		}
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
		if err != nil {
			t.Fatalf("env %v: %v", env, err)
		}
		js := string(out)
		for _, want := range []string{`"handler":"llm_spend"`, `"handler":"llm_spend_admin"`, `"llm_spend":{`, `"email":true`, `{env.MASTER_KEY}`} {
			if !strings.Contains(js, want) {
				t.Errorf("env %v: adapted config lacks %s", env, want)
			}
		}
		if strings.Contains(js, "sk-master-secret-value") {
			t.Errorf("the master key was substituted into the config")
		}
	}
}
