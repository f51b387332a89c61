package e2e

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestSecretsNeverLeak drives every path — success, each kind of failed
// callback, refresh errors whose provider bodies repeat the secrets, and a
// Vault that refuses the token — with debug logging on, then looks for every
// secret met on the way (access and refresh tokens, authorization code,
// state, PKCE verifier, client secret, Vault token) in the logs, the
// responses the proxy produced and the metrics.
func TestSecretsNeverLeak(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	logOpt := "log {\n\t\toutput file " + logFile + "\n\t\tlevel DEBUG\n\t}"
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{options: logOpt})
	s := f.s
	secrets := map[string]string{"client secret": f.c.Secret, "vault token": os.Getenv("VAULT_TOKEN")}
	var produced strings.Builder // every response of ours, headers and body
	keep := func(resp *http.Response, body string) {
		for k, v := range resp.Header {
			produced.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		produced.WriteString(body + "\n")
	}
	noteTokens := func() {
		if rec := s.stored(t, "demo"); rec != nil {
			secrets["access token "+rec["access_token"].(string)[:12]] = rec["access_token"].(string)
			secrets["refresh token "+rec["refresh_token"].(string)[:12]] = rec["refresh_token"].(string)
		}
	}
	b := newBrowser()
	// flowTo starts a flow and returns the callback URL, noting its state,
	// code and the PKCE verifier (read from the pending state in Vault).
	flowTo := func(name string) string {
		cb := toCallback(t, b, s, "")
		u, _ := url.Parse(cb)
		secrets["state "+name], secrets["code "+name] = u.Query().Get("state"), u.Query().Get("code")
		list, err := s.vault.Logical().List("secret/metadata/" + s.prefix + "/states")
		if err != nil || list == nil {
			t.Fatalf("listing pending states: %v", err)
		}
		for _, k := range list.Data["keys"].([]any) {
			sec, _ := s.vault.Logical().Read("secret/data/" + s.prefix + "/states/" + k.(string))
			if sec != nil {
				if v, ok := sec.Data["data"].(map[string]any)["verifier"].(string); ok {
					secrets["verifier "+name+" "+k.(string)[:8]] = v
				}
			}
		}
		return cb
	}

	// Success, then the replayed callback.
	cb := flowTo("success")
	keep(b.as(t, "", cb))
	noteTokens()
	keep(b.as(t, "", cb))
	// The provider's error, a code the provider refuses, a foreign browser.
	keep(b.as(t, "", strings.Replace(flowTo("denied"), "code=", "error=access_denied&error_description=x&c=", 1)))
	u, _ := url.Parse(flowTo("bad code"))
	q := u.Query()
	q.Set("code", q.Get("code")+"x")
	u.RawQuery = q.Encode()
	keep(b.as(t, "", u.String()))
	keep(newBrowser().as(t, "", flowTo("foreign")))
	// The proxy, the status routes.
	for _, p := range []string{"/demo/items", "/oauth/connectors", "/oauth/"} {
		keep(b.as(t, "", s.base+p))
	}

	// Refresh errors whose bodies repeat the request: transient, then the
	// grant rejected.
	exp, _ := time.Parse(time.RFC3339, s.stored(t, "demo")["expiry"].(string))
	time.Sleep(time.Until(exp.Add(time.Second)))
	f.counter.Echo.Store(http.StatusInternalServerError)
	resp, body := b.as(t, "", s.base+"/demo/items")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refresh failing with a 500: %d %s", resp.StatusCode, body)
	}
	keep(resp, body)
	f.counter.Echo.Store(http.StatusBadRequest)
	time.Sleep(1100 * time.Millisecond) // the connection's first backoff
	keep(b.as(t, "", s.base+"/demo/items"))
	keep(b.as(t, "", s.base+"/oauth/connectors"))
	if f.counter.Count("refresh_token") < 2 {
		t.Fatalf("refresh attempts = %d; the error paths were not driven", f.counter.Count("refresh_token"))
	}

	// A Vault that refuses the token.
	const badVault = "hvs.CANARY-vault-token-7f3e9a"
	secrets["bad vault token"] = badVault
	cfg := strings.Replace(vaultCaddyfile(t, f, logOpt), "token {env.VAULT_TOKEN}", "token "+badVault, 1)
	caddytest.NewTester(t).InitServer(cfg, "caddyfile")
	for _, p := range []string{"/demo/items", "/oauth/connectors", "/oauth/connectors/demo/authorize"} {
		resp, body := b.as(t, "", s.base+p)
		keep(resp, body)
		if p == "/oauth/connectors/demo/authorize" && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("authorize with Vault refusing: %d %s", resp.StatusCode, body)
		}
	}

	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "refresh rejected by the provider") || !strings.Contains(string(logs), "vault") {
		t.Fatal("the log lacks the failure paths; the test did not drive them")
	}
	for name, v := range secrets {
		if len(v) < 8 {
			t.Fatalf("%s was not captured", name)
		}
		for where, text := range map[string]string{"logs": string(logs), "responses": produced.String(), "metrics": string(metrics)} {
			if strings.Contains(text, v) {
				t.Errorf("the %s contain the %s", where, name)
			}
		}
	}
}

// vaultCaddyfile is the fixture's Caddyfile, for reloading with changes.
func vaultCaddyfile(t *testing.T, f *fixture, options string) string {
	t.Helper()
	return sidecarCaddyfile(f.s.prefix, f.h.PublicURL, f.counter.URL, f.c, f.up.URL, sidecarOptions{authStyle: "basic", options: options})
}
