// Package e2e tests caddy-oauthconn end to end, as an operator runs it: a
// real Caddy (through caddytest, and the built binary) with a Caddyfile,
// a real Vault, a real OAuth 2.0 authorization server (Ory Hydra) with
// short-lived access tokens and strict refresh-token rotation, and an
// upstream API that checks tokens by introspection. The browser is an HTTP
// client with a cookie jar.
package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	vaultapi "github.com/hashicorp/vault/api"

	_ "github.com/caddy-oauthconn/caddy-oauthconn/caddymodule"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

func TestMain(m *testing.M) {
	// Keep Caddy's autosaved config and data out of the user's home.
	dir, err := os.MkdirTemp("", "oauthconn-e2e-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Setenv("XDG_DATA_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// browser is a user agent: it keeps cookies and follows redirects,
// remembering every URL it visited.
type browser struct {
	c       *http.Client
	visited []*url.URL
}

func newBrowser() *browser {
	b := &browser{}
	jar, _ := cookiejar.New(nil)
	b.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		b.visited = append(b.visited, req.URL)
		if len(via) > 20 {
			return fmt.Errorf("too many redirects")
		}
		return nil
	}}
	return b
}

func (b *browser) do(t *testing.T, method, u, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return b.send(t, req, true)
}

// send sends req, following redirects or not, and returns the response
// with its body read.
func (b *browser) send(t *testing.T, req *http.Request, follow bool) (*http.Response, string) {
	t.Helper()
	if !follow {
		b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		defer func() { b.c.CheckRedirect = nil }()
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp, string(rb)
}

// callbackURL returns the last visited URL of the callback route.
func (b *browser) callbackURL(t *testing.T) string {
	t.Helper()
	for i := len(b.visited) - 1; i >= 0; i-- {
		if strings.HasSuffix(b.visited[i].Path, "/oauth/callback") {
			return b.visited[i].String()
		}
	}
	t.Fatal("the browser never reached the callback")
	return ""
}

// sidecar is a Caddy with oauthconn loaded through caddytest.
type sidecar struct {
	base   string // public URL
	prefix string // Vault prefix of this test's records
	vault  *vaultapi.Client
}

const caddyfileTemplate = `{
	admin localhost:2999
	%[11]s
	oauthconn {
		%[8]s
		public_url http://localhost:9080
		store vault {
			address {env.VAULT_ADDR}
			token {env.VAULT_TOKEN}
			mount secret
			prefix %[1]s
		}
		connector demo {
			authorization_url %[2]s/oauth2/auth
			token_url %[3]s/oauth2/token
			client_id %[4]s
			client_secret %[5]s
			auth_style %[7]s
			scopes openid offline_access
			refresh_cooldown 2s
			%[9]s
		}
	}
}

http://localhost:9080 {
	%[10]s
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo %[6]s {
			replay_limit 64KiB
		}
	}
}
`

// sidecarOptions are additions to the test Caddyfile.
type sidecarOptions struct {
	authStyle string // basic (default) or post
	options   string // global options besides oauthconn (log, debug)
	app       string // oauthconn options
	connector string // options of connector demo
	site      string // site directives before oauthconn_connect
}

// startSidecar loads the test Caddyfile into caddytest's Caddy.
func startSidecar(t *testing.T, h *hydra, tokenURL string, c hydradev.Client, up *upstream, o sidecarOptions) *sidecar {
	t.Helper()
	if o.authStyle == "" {
		o.authStyle = "basic"
	}
	env := testservices.Vault(t)
	s := &sidecar{base: "http://localhost:9080", prefix: "e2e-" + hydradev.RandomHex(6)}
	cfg := sidecarCaddyfile(s.prefix, h.PublicURL, tokenURL, c, up.URL, o)
	tester := caddytest.NewTester(t)
	tester.InitServer(cfg, "caddyfile")
	vc, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(env.Token)
	s.vault = vc
	return s
}

func sidecarCaddyfile(prefix, hydraURL, tokenURL string, c hydradev.Client, upstream string, o sidecarOptions) string {
	return fmt.Sprintf(caddyfileTemplate, prefix, hydraURL, tokenURL, c.ID, c.Secret, upstream, o.authStyle, o.app, o.connector, o.site, o.options)
}

// stored reads the connection's token set from Vault: nil when Vault holds
// none (no record, a tombstone left by a disconnect, or a connection marked
// as needing authorization).
func (s *sidecar) stored(t *testing.T, connector string) map[string]any {
	t.Helper()
	rec := s.record(t, connector)
	if rec == nil || rec["state"] != nil {
		return nil
	}
	return rec
}

// record reads the connection's record from Vault as it is, or nil.
func (s *sidecar) record(t *testing.T, connector string) map[string]any {
	t.Helper()
	sec, err := s.vault.Logical().Read("secret/data/" + s.prefix + "/tokens/" + connector)
	if err != nil {
		t.Fatal(err)
	}
	if sec == nil {
		return nil
	}
	data, _ := sec.Data["data"].(map[string]any)
	return data
}

// fixture is one test's world: Hydra, the upstream API behind the proxy, a
// token-request counter in front of Hydra, a registered client and the
// sidecar configured with it.
type fixture struct {
	h       *hydra
	up      *upstream
	counter *tokenCounter
	c       hydradev.Client
	s       *sidecar
}

// newFixture starts the sidecar on http://localhost:9080 with a Hydra client
// that authenticates with authMethod (client_secret_basic or _post).
func newFixture(t *testing.T, authMethod string) *fixture {
	return newFixtureWith(t, authMethod, sidecarOptions{})
}

func newFixtureWith(t *testing.T, authMethod string, o sidecarOptions) *fixture {
	t.Helper()
	f := &fixture{h: newHydra(t)}
	f.up = newUpstream(t, f.h)
	f.counter = f.h.countTokens(t)
	f.c = f.h.createClient(t, "http://localhost:9080/oauth/callback", authMethod)
	o.authStyle = strings.TrimPrefix(authMethod, "client_secret_")
	f.s = startSidecar(t, f.h, f.counter.URL, f.c, f.up, o)
	return f
}

// storm sends n concurrent GETs, spread over urls, and returns how many did
// not answer 200.
func storm(n int, urls ...string) int64 {
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(urls[i%len(urls)])
			if err != nil {
				bad.Add(1)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	return bad.Load()
}
