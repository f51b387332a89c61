package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary text to the parsers of the
// oauthconn global option and the two directives: they may refuse it, but
// must not panic, and what they accept must adapt to JSON.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"oauthconn {\n public_url http://localhost:8080\n connector a {\n client_id x\n scopes a b\n pkce off\n }\n}",
		"oauthconn {\n store vault {\n address http://v\n }\n rate_limit 5 1m 10\n}",
		"oauthconn {\n store file {\n key_file /k\n }\n allowed_return_origins https://a\n}",
		"oauthconn_proxy demo https://api.example.com {\n replay_limit 1KiB\n header_up X-A b\n}",
		"oauthconn_proxy a b {\n}\n", "oauthconn {\n connector {\n}\n}", "oauthconn { connector a { authorization_param x } }",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		toks, err := caddyfile.Tokenize([]byte(src), "fuzz")
		if err != nil || len(toks) == 0 {
			return
		}
		switch toks[0].Text {
		case "oauthconn":
			if _, err := parseGlobalOption(caddyfile.NewDispenser(toks), nil); err != nil {
				return
			}
		case "oauthconn_proxy":
			new(ProxyHandler).UnmarshalCaddyfile(caddyfile.NewDispenser(toks))
		case "oauthconn_connect":
			new(ConnectHandler).UnmarshalCaddyfile(caddyfile.NewDispenser(toks))
		}
	})
}
