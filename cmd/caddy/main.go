// Command caddy is Caddy with its standard modules plus llmspend.
// It is what `xcaddy build --with github.com/llmspend/llmspend` produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// llmspend: the llm_spend app and handlers.
	_ "github.com/llmspend/llmspend/caddymodule"
)

func main() {
	caddycmd.Main()
}
