// Package oauthconn is caddy-oauthconn's root package: importing it, as
// xcaddy does for `xcaddy build --with github.com/caddy-oauthconn/caddy-oauthconn`,
// registers every caddy-oauthconn module with Caddy (the oauthconn app, the
// oauthconn_connect and oauthconn_proxy handlers, the stores).
package oauthconn

import (
	_ "github.com/caddy-oauthconn/caddy-oauthconn/caddymodule"
)
