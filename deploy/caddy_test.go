package deploy_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-oauthconn/caddy-oauthconn/caddymodule"
)

// config is the part of an adapted Caddy configuration the tests look at.
type config struct {
	Admin struct {
		Disabled bool   `json:"disabled"`
		Listen   string `json:"listen"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			Servers map[string]server `json:"servers"`
		} `json:"http"`
		OAuthConn struct {
			PublicURL string          `json:"public_url"`
			BasePath  string          `json:"base_path"`
			Store     json.RawMessage `json:"store"`
		} `json:"oauthconn"`
	} `json:"apps"`
	raw []byte
}

type server struct {
	Listen []string `json:"listen"`
	Routes []route  `json:"routes"`
}

type route struct {
	Group    string                       `json:"group"`
	Match    []map[string]json.RawMessage `json:"match"`
	Handle   []map[string]json.RawMessage `json:"handle"`
	Terminal bool                         `json:"terminal"`
}

// basePath is oauthconn_connect's base path, as the app defaults it.
func (c *config) basePath() string {
	if c.Apps.OAuthConn.BasePath == "" {
		return "/oauth"
	}
	return "/" + strings.Trim(c.Apps.OAuthConn.BasePath, "/")
}

// adapt adapts a Caddyfile with caddy-oauthconn's and Caddy's standard
// modules, as `caddy-oauthconn adapt` would, failing on any warning (an
// unformatted Caddyfile is one).
func adapt(t *testing.T, name string, body []byte) *config {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": name})
	if err != nil {
		t.Fatalf("%s: adapting: %v", name, err)
	}
	for _, w := range warnings {
		t.Errorf("%s: warning: %s", name, w.String())
	}
	if formatted := caddyfile.Format(body); string(formatted) != string(body) {
		t.Errorf("%s is not formatted as `caddy-oauthconn fmt` would", name)
	}
	c := &config{raw: out}
	if err := json.Unmarshal(out, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// provision provisions every module of the adapted configuration, as
// loading it would, without starting anything: no listener opens and
// nothing is contacted. It is where placeholders ({file.…}, {env.…}) are
// expanded and values checked (public_url must be https off loopback, a
// basic_auth hash must be one). Caddy's data and configuration directories
// are temporary ones.
func provision(t *testing.T, name string, raw []byte) {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	// Errors only: a {file.…} placeholder whose file is missing is one.
	cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
		"default": {BaseLog: caddy.BaseLog{Level: "ERROR"}},
	}}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("%s: provisioning the configuration: %v", name, err)
	}
}

// listensOn returns the servers with a listener on port: the address's
// host, "" for every interface.
func (c *config) listensOn(port string) map[string]server {
	found := map[string]server{}
	for name, s := range c.Apps.HTTP.Servers {
		for _, l := range s.Listen {
			addr, err := caddy.ParseNetworkAddress(l)
			if err != nil || addr.IsUnixNetwork() {
				continue
			}
			for p := addr.StartPort; p <= addr.EndPort; p++ {
				if port == strconv.Itoa(int(p)) {
					found[name] = s
				}
			}
		}
	}
	return found
}

// hop is a handler a request reaches, with its configuration.
type hop struct {
	handler string
	fields  map[string]json.RawMessage
}

func (h hop) String() string { return h.handler }

// serve returns the handlers a request to target (an absolute URL: its host
// is the Host header) passes through on the server s, in order, up to the
// one that answers; answered is false if none does (Caddy then answers an
// empty 200). It follows Caddy's route semantics for what these Caddyfiles
// use (host, path and not matchers, subroutes, groups, path prefix
// stripping) and fails the test on anything else.
func serve(t *testing.T, s server, target string) (hops []hop, answered bool) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: u.Path}, Host: u.Host, Header: http.Header{}}
	r = r.WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	return serveRoutes(t, s.Routes, r)
}

func serveRoutes(t *testing.T, routes []route, r *http.Request) ([]hop, bool) {
	var hops []hop
	groups := map[string]bool{}
	for _, rt := range routes {
		if rt.Group != "" && groups[rt.Group] {
			continue
		}
		if !matchSets(t, rt.Match, r) {
			continue
		}
		if rt.Group != "" {
			groups[rt.Group] = true
		}
		for _, h := range rt.Handle {
			var name string
			_ = json.Unmarshal(h["handler"], &name)
			hops = append(hops, hop{name, h})
			switch name {
			case "subroute":
				var sub []route
				if err := json.Unmarshal(h["routes"], &sub); err != nil {
					t.Fatal(err)
				}
				more, done := serveRoutes(t, sub, r)
				hops = append(hops, more...)
				if done {
					return hops, true
				}
			case "rewrite":
				for k := range h {
					if k != "handler" && k != "strip_path_prefix" {
						t.Fatalf("rewrite %s: not modelled by this test", k)
					}
				}
				var prefix string
				_ = json.Unmarshal(h["strip_path_prefix"], &prefix)
				r.URL.Path = strings.TrimPrefix(r.URL.Path, prefix)
			case "authentication", "headers", "vars", "encode", "request_body":
				// Middleware: the request goes on (authenticated).
			case "oauthconn_connect":
				// Answers below its base path; passes everything else on.
				return hops, true
			default:
				return hops, true
			}
		}
		if rt.Terminal {
			return hops, true
		}
	}
	return hops, false
}

// matchSets: any of the sets matches (OR); within a set, every matcher
// (AND); an empty list matches everything.
func matchSets(t *testing.T, sets []map[string]json.RawMessage, r *http.Request) bool {
	if len(sets) == 0 {
		return true
	}
	for _, set := range sets {
		if matchSet(t, set, r) {
			return true
		}
	}
	return false
}

func matchSet(t *testing.T, set map[string]json.RawMessage, r *http.Request) bool {
	for kind, raw := range set {
		var ok bool
		var err error
		switch kind {
		case "host":
			var m caddyhttp.MatchHost
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if err := m.Provision(caddy.Context{}); err != nil {
				t.Fatal(err)
			}
			ok, err = m.MatchWithError(r)
		case "path":
			var m caddyhttp.MatchPath
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if err := m.Provision(caddy.Context{}); err != nil {
				t.Fatal(err)
			}
			ok, err = m.MatchWithError(r)
		case "not":
			var sets []map[string]json.RawMessage
			if err := json.Unmarshal(raw, &sets); err != nil {
				t.Fatal(err)
			}
			ok = !matchSets(t, sets, r)
		default:
			t.Fatalf("matcher %q: not modelled by this test", kind)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return false
		}
	}
	return true
}

// handlers names the hops.
func handlers(hops []hop) []string {
	var names []string
	for _, h := range hops {
		names = append(names, h.handler)
	}
	return names
}

// last is the handler that answered.
func last(hops []hop) hop {
	if len(hops) == 0 {
		return hop{}
	}
	return hops[len(hops)-1]
}

func has(hops []hop, handler string) bool {
	for _, h := range hops {
		if h.handler == handler {
			return true
		}
	}
	return false
}

// isLoopback says whether a listener address binds loopback only.
func isLoopback(listen string) bool {
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil {
		return false
	}
	if addr.IsUnixNetwork() {
		return true
	}
	ip := net.ParseIP(addr.Host)
	return addr.Host == "localhost" || (ip != nil && ip.IsLoopback())
}

// checkProxyConfinement: every oauthconn_proxy is on a server that listens
// on loopback only, and no server that listens elsewhere reaches one.
func checkProxyConfinement(t *testing.T, c *config) {
	t.Helper()
	proxies := 0
	for name, s := range c.Apps.HTTP.Servers {
		raw, _ := json.Marshal(s.Routes)
		if !strings.Contains(string(raw), `"handler":"oauthconn_proxy"`) {
			continue
		}
		proxies++
		for _, l := range s.Listen {
			if !isLoopback(l) {
				t.Errorf("server %s has oauthconn_proxy routes and listens on %s: the proxy must listen on loopback only", name, l)
			}
		}
	}
	if proxies == 0 {
		t.Error("no server has oauthconn_proxy routes")
	}
}

// readFile reads a file of this directory.
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// under says whether p is dir or below it.
func under(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
