package e2e

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// TestContractCaddyfile runs examples/vault.Caddyfile, the configuration
// the product promises to run as written, with the demo connector pointed at
// Hydra and the Microsoft and Notion connectors not registered yet.
func TestContractCaddyfile(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	counter := h.countTokens(t)
	c := h.createClient(t, "http://localhost:8080/oauth/callback", "client_secret_basic")
	venv := testservices.Vault(t)
	for k, v := range map[string]string{
		"VAULT_ADDR": venv.Addr, "VAULT_TOKEN": venv.Token,
		"AS_AUTH_URL": h.PublicURL + "/oauth2/auth", "AS_TOKEN_URL": counter.URL + "/oauth2/token",
		"AS_CLIENT_ID": c.ID, "AS_CLIENT_SECRET": c.Secret, "DEMO_UPSTREAM": up.URL,
		"MS_CLIENT_ID": "", "NOTION_CLIENT_ID": "",
	} {
		t.Setenv(k, v)
	}
	// The example's prefix is fixed: start from no connection.
	vc, err := vaultapi.NewClient(&vaultapi.Config{Address: venv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(venv.Token)
	if _, err := vc.Logical().Delete("secret/metadata/caddy-oauthconn/tokens/demo"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../examples/vault.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	// The only change: caddytest's admin endpoint.
	cfg := strings.Replace(string(b), "{\n\toauthconn {", "{\n\tadmin localhost:2999\n\toauthconn {", 1)
	caddytest.NewTester(t).InitServer(cfg, "caddyfile")
	base := "http://localhost:8080"
	proxy := "http://127.0.0.1:8081" // the apps' site
	app := newBrowser()

	for _, p := range []string{"/graph/v1.0/me", "/notion/v1/users"} {
		resp, body := app.do(t, "GET", proxy+p, "", "")
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"connector_unconfigured"`) || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/oauth/connectors/nope/authorize", "/oauth/nothing"} {
		resp, body := app.do(t, "GET", base+p, "", "")
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	_, body := app.do(t, "GET", base+"/oauth/connectors", "", "")
	for _, want := range []string{`{"name":"notion","provider":"notion","status":"unconfigured"}`, `{"name":"sharepoint","provider":"microsoft","status":"unconfigured"}`, `"name":"demo","status":"authorization_required"`} {
		if !strings.Contains(body, want) {
			t.Errorf("status lacks %s: %s", want, body)
		}
	}

	t.Run("a provider error is shown escaped and redeems nothing", func(t *testing.T) {
		user := newBrowser()
		user.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, _ := user.do(t, "GET", base+"/oauth/connectors/demo/authorize", "", "")
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("GET authorize: %d", resp.StatusCode)
		}
		loc, _ := url.Parse(resp.Header.Get("Location"))
		state := loc.Query().Get("state")
		before := counter.Total()
		cb := base + "/oauth/callback?" + url.Values{"state": {state}, "error": {"access_denied"},
			"error_description": {`<script>alert("x")</script>`}}.Encode()
		resp, body := user.do(t, "GET", cb, "", "")
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "<script>") ||
			!strings.Contains(body, "access_denied: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Fatalf("error page: %d %s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Fatalf("CSP = %q", csp)
		}
		if counter.Total() != before {
			t.Fatal("a token request was made for a failed authorization")
		}
		// The state was consumed: the same state cannot be used again.
		resp, _ = user.do(t, "GET", base+"/oauth/callback?state="+url.QueryEscape(state)+"&code=x", "", "")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("reused state: %d", resp.StatusCode)
		}
	})

	t.Run("a callback from another browser is refused", func(t *testing.T) {
		starter, other := newBrowser(), newBrowser()
		starter.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, _ := starter.do(t, "GET", base+"/oauth/connectors/demo/authorize", "", "")
		loc, _ := url.Parse(resp.Header.Get("Location"))
		before := counter.Total()
		resp, body := other.do(t, "GET", base+"/oauth/callback?state="+url.QueryEscape(loc.Query().Get("state"))+"&code=stolen", "", "")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another browser") {
			t.Fatalf("foreign callback: %d %s", resp.StatusCode, body)
		}
		if counter.Total() != before {
			t.Fatal("a token request was made for a foreign callback")
		}
	})

	t.Run("connect and proxy", func(t *testing.T) {
		user := newBrowser()
		resp, body := user.do(t, "GET", base+"/oauth/connectors/demo/authorize", "", "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "demo is connected") {
			t.Fatalf("connect: %d %s", resp.StatusCode, body)
		}
		resp, body = app.do(t, "GET", proxy+"/demo/hello", "", "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"path":"/hello"`) {
			t.Fatalf("proxy: %d %s", resp.StatusCode, body)
		}
	})
}
