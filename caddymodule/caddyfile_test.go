package caddymodule

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oauthconn-caddymodule-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func adapt(src string) ([]byte, error) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	return out, err
}

// load adapts and validates a Caddyfile as `caddy validate` does: every
// module is provisioned, nothing is started, no network is used.
func load(src string) error {
	out, err := adapt(src)
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

const site = `
http://localhost:8080 {
	oauthconn_connect /oauth/*
}
`

func global(body string) string {
	return "{\n\toauthconn {\n" + body + "\n\t}\n}\n" + site
}

func TestCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"unknown option", global("public_ur http://x"), `unrecognized oauthconn option "public_ur"`},
		{"argument on oauthconn", "{\n\toauthconn x {\n\t}\n}\n", "wrong argument count"},
		{"duplicate connector", global("connector a {\n}\nconnector a {\n}"), "connector a is defined twice"},
		{"unknown provider", global("connector a {\nprovider gitlab\n}"), `connector a: unknown provider "gitlab" (known: atlassian, box, dropbox, github, google, hubspot, linear, microsoft, notion, salesforce, slack, zoom)`},
		{"token_kind", global("connector a {\nprovider slack\ntoken_kind admin\n}"), `connector a: token_kind must be user or bot, got "admin"`},
		{"domain arity", global("connector a {\nprovider salesforce\ndomain\n}"), `wrong argument count`},
		{"bad auth_style", global("connector a {\nauth_style auto\n}"), `connector a: auth_style must be basic, post, private_key_jwt or client_assertion, got "auto"`},
		{"bad pkce", global("connector a {\npkce maybe\n}"), "pkce must be on or off"},
		{"unknown connector option", global("connector a {\nclient_idd x\n}"), `connector a: unrecognized option "client_idd"`},
		{"bad duration", global("connector a {\nrefresh_margin soon\n}"), `bad duration "soon"`},
		{"negative duration", global("flow_ttl -1m"), "must be positive"},
		{"param arity", global("connector a {\nauthorization_param owner\n}"), "authorization_param takes a name and a value"},
		{"unknown store", global("store redis {\n}"), "store redis"},
		{"two stores", global("store file\nstore file"), "store may be given only once"},
		{"vault option", global("store vault {\nadress x\n}"), `store vault: unrecognized option "adress"`},
		{"vault auth method", global("store vault {\nauth ldap\n}"), `unknown auth method "ldap"`},
		{"vault auth option", global("store vault {\nauth approle {\nrole x\n}\n}"), `auth approle: unrecognized option "role"`},
		{"vault address without URL", global("store vault {\naddress\n}"), "address takes one or more URLs"},
		{"vault encrypt engine", global("store vault {\nencrypt aes k\n}"), "encrypt takes: transit <key> [<mount>]"},
		{"vault encrypt without key", global("store vault {\nencrypt transit\n}"), "encrypt takes: transit <key> [<mount>]"},
		{"vault encrypt arity", global("store vault {\nencrypt transit k m x\n}"), "encrypt takes: transit <key> [<mount>]"},
		{"vault auth token_file path", global("store vault {\nauth token_file\n}"), "auth token_file takes the token file's path"},
		{"vault timeout", global("store vault {\ntimeout soon\n}"), `bad duration "soon"`},
		{"vault max_retries", global("store vault {\nmax_retries some\n}"), `store vault: max_retries "some" is not a whole number`},
		{"file key and key_file", global("store file {\nkey a\nkey_file b\n}"), "give key or key_file, not both"},
		{"base_path relative", global("base_path oauth"), "must start with /"},
		{"proxy arguments", "http://localhost:8080 {\n\toauthconn_proxy demo http://x http://y\n}\n", "takes a connector name and an upstream URL, got 3"},
		{"registration mode", global("connector mcp {\nresource https://mcp.example.com/mcp\nregistration magic\n}"), `registration must be dynamic, metadata_document or static, got "magic"`},
		{"proxy to", "http://localhost:8080 {\n\toauthconn_proxy demo http://x {\n\t\tto http://y\n\t}\n}\n", "to is not allowed"},
		{"proxy replay_limit", "http://localhost:8080 {\n\toauthconn_proxy demo http://x {\n\t\treplay_limit lots\n\t}\n}\n", `replay_limit "lots"`},
		{"proxy replay_limit too large", "http://localhost:8080 {\n\toauthconn_proxy demo http://x {\n\t\treplay_limit 9EiB\n\t}\n}\n", `replay_limit "9EiB" is too large`},
		{"allow_browsers without origins", "http://localhost:8080 {\n\toauthconn_proxy demo http://x {\n\t\tallow_browsers\n\t}\n}\n", "allow_browsers takes one or more origins"},
		{"rate_limit arity", global("rate_limit 10"), "rate_limit takes <requests> <window>"},
		{"rate_limit requests", global("rate_limit many 1m"), `rate_limit: requests "many"`},
		{"max_pending_flows", global("max_pending_flows -3"), `max_pending_flows "-3" must be a positive number`},
		{"max_pending_flows_per_client", global("max_pending_flows_per_client 0"), `max_pending_flows_per_client "0" must be a positive number`},
		{"max_concurrent_refreshes", global("connector a {\nmax_concurrent_refreshes 0\n}"), `connector a: max_concurrent_refreshes "0" must be a positive number`},
		{"max_waiting", global("connector a {\nmax_waiting lots\n}"), `connector a: max_waiting "lots" must be a positive number`},
		{"max_waiting arity", global("connector a {\nmax_waiting 1 2\n}"), "wrong argument count"},
		{"ipv6_prefix", global("ipv6_prefix 129"), "ipv6_prefix 129 must be at most 128"},
		{"metadata of a secret", global("connector a {\nmetadata instance_url refresh_token\n}"), `connector a: metadata: metadata name "refresh_token" names a secret`},
		{"metadata without names", global("connector a {\nmetadata\n}"), "connector a: metadata needs arguments"},
		{"callback_metadata name", global("connector a {\ncallback_metadata realm.id\n}"), "may hold only letters"},
		{"allowed_hosts pattern", global("connector a {\nallowed_hosts *.com\n}"), "needs at least two other labels"},
		{"metadata_discovery pairs", global("connector a {\nmetadata_discovery https://api/r cloud_id\n}"), "pairs of a metadata name and a JSON path"},
		{"metadata_discovery twice", global("connector a {\nmetadata_discovery https://api/r a 0.id\nmetadata_discovery https://api/r b 0.id\n}"), "metadata_discovery may be given once"},
		{"connect arguments", "http://localhost:8080 {\n\toauthconn_connect /oauth/* extra\n}\n", "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

const demoConnector = `connector demo {
	authorization_url https://as.example.com/authorize
	token_url https://as.example.com/token
	client_id demo
}`

func TestLoadErrors(t *testing.T) {
	proxy := func(conn, upstream string) string {
		return "http://localhost:8080 {\n\toauthconn_proxy " + conn + " " + upstream + "\n}\n"
	}
	withProxy := func(body, conn, upstream string) string {
		return "{\n\toauthconn {\n" + body + "\n\t}\n}\n" + proxy(conn, upstream)
	}
	tests := []struct {
		name string
		src  string
		want string // empty: loads
	}{
		{"valid", withProxy("public_url http://localhost:8080\n"+demoConnector, "demo", "https://api.example.com/v1"), ""},
		{"unknown connector", withProxy("public_url http://localhost:8080\n"+demoConnector, "other", "https://api.example.com"), `oauthconn_proxy: unknown connector "other"`},
		{"ftp upstream", withProxy("public_url http://localhost:8080\n"+demoConnector, "demo", "ftp://files.example.com"), `oauthconn_proxy demo: upstream "ftp://files.example.com" must be an http:// or https:// URL`},
		{"upstream with query", withProxy("public_url http://localhost:8080\n"+demoConnector, "demo", "https://api.example.com/?k=v"), "without user, query or fragment"},
		{"empty upstream of a configured connector", withProxy("public_url http://localhost:8080\n"+demoConnector, "demo", "{env.OAUTHCONN_TEST_UNSET}"), "oauthconn_proxy demo: upstream URL is empty"},
		{"allow_browsers wildcard", "{\n\toauthconn {\npublic_url http://localhost:8080\n" + demoConnector + "\n\t}\n}\nhttp://localhost:8080 {\n\toauthconn_proxy demo https://api.example.com {\n\t\tallow_browsers *\n\t}\n}\n", `oauthconn_proxy demo: allow_browsers: "*" is not an origin`},
		{"allow_browsers with a path", "{\n\toauthconn {\npublic_url http://localhost:8080\n" + demoConnector + "\n\t}\n}\nhttp://localhost:8080 {\n\toauthconn_proxy demo https://api.example.com {\n\t\tallow_browsers https://app.example.com/x\n\t}\n}\n", `allow_browsers: "https://app.example.com/x" is not an origin`},
		{"relative public_url", global("public_url localhost:8080"), `public_url "localhost:8080" must be an absolute http(s) URL`},
		{"missing token_url", global("public_url http://localhost:8080\nconnector a {\nauthorization_url https://as/a\nclient_id x\n}"), "connector a: token_url is required"},
		{"missing public_url", global(demoConnector), "connector demo: public_url (or the connector's redirect_uri) is required"},
		{"bad connector name", global("public_url http://localhost:8080\nconnector a/b {\nclient_id x\n}"), `connector name "a/b"`},
		{"unconfigured connector loads", withProxy("public_url http://localhost:8080\nconnector n {\nprovider notion\nclient_id {env.OAUTHCONN_TEST_UNSET}\n}", "n", "{env.OAUTHCONN_TEST_UNSET}"), ""},
		{"no client_id at all", global("public_url http://localhost:8080\nconnector a {\nauthorization_url https://as/a\ntoken_url https://as/t\n}"), "connector a: client_id is required"},
		{"http public_url off loopback", global("public_url http://connect.example.com"), `public_url "http://connect.example.com" must be https`},
		{"http public_url on loopback", global("public_url http://127.0.0.1:8080"), ""},
		{"bad return origin", global("public_url http://localhost:8080\nallowed_return_origins https://app.example.com/path"), `allowed_return_origins: "https://app.example.com/path" is not an origin`},
		{"bad issuer", withProxy("public_url http://localhost:8080\nconnector demo {\nauthorization_url https://as/a\ntoken_url https://as/t\nclient_id x\nissuer as.example.com\n}", "demo", "https://api"), "connector demo: issuer must be an absolute http(s) URL"},
		{"approle without secret", global("store vault {\nauth approle {\nrole_id r\n}\n}"), "role_id and secret_id or secret_id_file are required"},
		{"file store key", global("store file {\nkey bm90IGEga2V5\n}"), "key must decode to 32 bytes"},
		{"vault fallback address with a path", global("store vault {\naddress http://v1:8200 http://v2:8200/vault\n}"), "several addresses must be plain scheme://host:port URLs"},
		{"vault fallback unix socket", global("store vault {\naddress http://v1:8200 unix:///run/vault.sock\n}"), "cannot include a unix socket"},
		{"vault transit key name", global("store vault {\nencrypt transit a/b\n}"), "must not contain a slash"},
		{"vault timeout and retries", global("store vault {\ntimeout 2s\nmax_retries -1\n}"), ""},
		{"vault negative timeout", global("store vault {\ntimeout -1s\n}"), `duration "-1s" must be positive`},
		{"vault cluster with transit", global("store vault {\naddress http://v1:8200 http://v2:8200 http://v3:8200\nencrypt transit caddy-oauthconn\n}"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := load(tt.src)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestContractCaddyfile loads the Caddyfile the product promises to run,
// with its Vault store, before any app is registered.
func TestContractCaddyfile(t *testing.T) {
	b, err := os.ReadFile("../examples/vault.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "unused")
	if err := load(string(b)); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := load(string(b)); err != nil {
		t.Fatalf("Caddyfile.example: %v", err)
	}
}

// TestReplayLimitCaddyfile: replay_limit takes a size; 0 and off turn the
// replay off (JSON -1), rather than meaning JSON's 0, the default.
func TestReplayLimitCaddyfile(t *testing.T) {
	for arg, want := range map[string]int64{"off": replayOff, "0": replayOff, "64KiB": 64 << 10, "1MB": 1000000} {
		var h ProxyHandler
		d := caddyfile.NewTestDispenser("oauthconn_proxy demo http://x {\n replay_limit " + arg + "\n}")
		if err := h.UnmarshalCaddyfile(d); err != nil || h.ReplayLimit != want {
			t.Errorf("replay_limit %s: %d, %v; want %d", arg, h.ReplayLimit, err, want)
		}
	}
}
