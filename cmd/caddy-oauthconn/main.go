// Command caddy-oauthconn is Caddy with its standard modules and the
// caddy-oauthconn modules: run it as you would run caddy, for example
//
//	caddy-oauthconn run --config Caddyfile
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-oauthconn/caddy-oauthconn/caddymodule"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
