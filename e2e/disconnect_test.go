package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
)

// TestDisconnect: DELETE on a connector revokes the grant at the provider
// (RFC 7009), removes the token from Vault with every version, and the app
// is told to authorize again.
func TestDisconnect(t *testing.T) {
	h := newHydra(t)
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{connector: "revocation_url " + h.PublicURL + "/oauth2/revoke"})
	connect(t, f.s, newBrowser())
	old := f.s.stored(t, "demo")
	app := newBrowser()
	if resp, _ := app.do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("before: %d", resp.StatusCode)
	}
	resp, body := app.do(t, "DELETE", f.s.base+"/oauth/connectors/demo", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	// A tombstone stays (so no writer can mistake a later connection for
	// this one), without a secret, and no older version keeps the tokens.
	if rec := f.s.record(t, "demo"); rec["state"] != "disconnected" || rec["access_token"] != nil || rec["refresh_token"] != nil {
		t.Fatalf("Vault holds %v after disconnect; want a tombstone without secrets", keys(rec))
	}
	meta, err := f.s.vault.Logical().Read("secret/metadata/" + f.s.prefix + "/tokens/demo")
	if err != nil || meta == nil {
		t.Fatalf("reading metadata: %v", err)
	}
	if versions, _ := meta.Data["versions"].(map[string]any); len(versions) != 1 {
		t.Fatalf("Vault keeps %d versions of a disconnected connection; older ones hold its tokens", len(versions))
	}
	if active, err := h.Active(old["access_token"].(string)); err != nil || active {
		t.Fatalf("access token active after disconnect: %v, %v", active, err)
	}
	resp, body = app.do(t, "GET", f.s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "authorization_required") {
		t.Fatalf("after: %d %s", resp.StatusCode, body)
	}
	if resp, _ := app.do(t, "DELETE", f.s.base+"/oauth/connectors/demo", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", resp.StatusCode)
	}
}

// TestDisconnectRevocationFails: when the provider cannot be reached, the
// connection is deleted here all the same and the answer says revocation
// failed.
func TestDisconnectRevocationFails(t *testing.T) {
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{connector: "revocation_url http://127.0.0.1:1/revoke"})
	connect(t, f.s, newBrowser())
	resp, body := newBrowser().do(t, "DELETE", f.s.base+"/oauth/connectors/demo", "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"revoked":false`) || !strings.Contains(body, `"revocation":"unreachable"`) || !strings.Contains(body, `"disconnected":true`) {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	if f.s.stored(t, "demo") != nil {
		t.Fatal("the token is still in Vault")
	}
}

// TestDisconnectForm: the connect page's Disconnect works without
// JavaScript as a same-origin form, and another site cannot post it.
func TestDisconnectForm(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	connect(t, f.s, newBrowser())
	post := func(site, origin string) *http.Response {
		req, _ := http.NewRequest("POST", f.s.base+"/oauth/connectors/demo/disconnect", nil)
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tt := range []struct{ site, origin string }{{"cross-site", "https://evil.example"}, {"", "https://evil.example"}, {"", ""}} {
		if resp := post(tt.site, tt.origin); resp.StatusCode != http.StatusForbidden || f.s.stored(t, "demo") == nil {
			t.Fatalf("form from %q/%q: %d", tt.site, tt.origin, resp.StatusCode)
		}
	}
	resp := post("same-origin", "http://localhost:9080")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/oauth/" || f.s.stored(t, "demo") != nil {
		t.Fatalf("same-origin form: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestReconnectDuringDisconnect: a disconnect ends the grant whose tokens
// it read and revoked, not one the person made while the revocation was
// under way. The revocation request is held at Hydra's door while the
// person connects again; then Hydra revokes the old grant. The DELETE
// answers 409 reconnected, Vault keeps the new grant, and the app's
// requests carry its token, which Hydra still honours.
func TestReconnectDuringDisconnect(t *testing.T) {
	h := newHydra(t)
	revoke := faultproxy.NewHTTP(t, h.PublicURL, nil)
	revoke.Set(faultproxy.Fault{Hang: true})
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{connector: "revocation_url " + revoke.URL + "/oauth2/revoke"})
	connect(t, f.s, newBrowser())
	old := f.s.stored(t, "demo")

	type answer struct {
		status int
		body   string
	}
	deleted := make(chan answer, 1)
	go func() {
		resp, body := newBrowser().do(t, "DELETE", f.s.base+"/oauth/connectors/demo", "", "")
		deleted <- answer{resp.StatusCode, body}
	}()
	if !waitUntil(10*time.Second, func() bool { return revoke.InFlight("") > 0 }) {
		t.Fatal("the disconnect sent no revocation request")
	}
	connect(t, f.s, newBrowser())
	reconnected := f.s.stored(t, "demo")
	if reconnected == nil || reconnected["generation"] == old["generation"] {
		t.Fatal("the reconnect made no new grant")
	}
	revoke.Clear()
	revoke.Release()
	a := <-deleted
	if a.status != http.StatusConflict || !strings.Contains(a.body, `"reconnected"`) {
		t.Fatalf("DELETE: %d %s; want 409 reconnected", a.status, a.body)
	}
	if rec := f.s.stored(t, "demo"); rec == nil || rec["refresh_token"] != reconnected["refresh_token"] {
		t.Fatalf("Vault no longer holds the new grant: %v", keys(rec))
	}
	if active, err := h.Active(old["access_token"].(string)); err != nil || active {
		t.Fatalf("the old grant's access token is active after its revocation: %v, %v", active, err)
	}
	if resp, body := newBrowser().do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the app after it: %d %s", resp.StatusCode, body)
	}
	if got := f.up.last(t).Authorization; got != "Bearer "+reconnected["access_token"].(string) {
		t.Fatal("the app's request did not carry the new grant's token")
	}
}
