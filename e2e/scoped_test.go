package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestScopedTokenFromHydra: an oauthconn_proxy with scopes obtains its own
// access token with the connection's refresh token from the real Ory Hydra,
// the client authenticating as for any refresh. Hydra accepts the scope
// parameter of a refresh but grants the grant's scopes (it does not narrow
// them), and rotates the refresh token with reuse detection: a refresh
// token redeemed twice would revoke the whole grant. So: one token request
// for a storm, a token distinct from the connection's, the rotated refresh
// token in Vault, and the connection's own token and its later refresh
// still good.
func TestScopedTokenFromHydra(t *testing.T) {
	f := &fixture{h: newHydra(t)}
	f.up = newUpstream(t, f.h)
	f.counter = f.h.countTokens(t)
	f.c = f.h.createClient(t, "http://localhost:9080/oauth/callback", "client_secret_post")
	f.s = startSidecar(t, f.h, f.counter.URL, f.c, f.up, sidecarOptions{
		authStyle: "post",
		site:      "handle_path /scoped/* {\n\t\toauthconn_proxy demo " + f.up.URL + " {\n\t\t\tscopes openid\n\t\t}\n\t}",
	})
	s, up, counter := f.s, f.up, f.counter
	connect(t, s, newBrowser())
	app := newBrowser()
	if resp, body := app.do(t, "GET", s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/demo: %d %s", resp.StatusCode, body)
	}
	before := s.stored(t, "demo")

	if bad := storm(50, s.base+"/scoped/items"); bad != 0 {
		t.Fatalf("%d of 50 scoped requests failed", bad)
	}
	if n := counter.Count("refresh_token"); n != 1 {
		t.Fatalf("refresh grants = %d, want 1 for the storm", n)
	}
	scoped := up.last(t)
	if !scoped.Active || scoped.Authorization == "Bearer "+before["access_token"].(string) {
		t.Fatalf("the scoped route sent %q (active %v); want a token of its own", scoped.Authorization, scoped.Active)
	}
	after := s.stored(t, "demo")
	if after["refresh_token"] == before["refresh_token"] || after["access_token"] != before["access_token"] || after["lease_holder"] != nil {
		t.Fatalf("Vault holds %v; want the rotated refresh token beside the connection's unchanged access token", keys(after))
	}

	// The connection's own token still works; when the upstream refuses
	// it, the connection refreshes with the rotated refresh token.
	up.Reject(before["access_token"].(string))
	resp, body := app.do(t, "GET", s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("/demo after the scoped refresh: %d %s", resp.StatusCode, body)
	}
	if n := counter.Count("refresh_token"); n != 2 {
		t.Fatalf("refresh grants = %d, want 2", n)
	}
	if rec := s.stored(t, "demo"); rec == nil || rec["refresh_token"] == after["refresh_token"] {
		t.Fatal("the connection's refresh did not rotate the stored refresh token")
	}
	if resp, body := app.do(t, "GET", s.base+"/scoped/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/scoped after: %d %s", resp.StatusCode, body)
	}
}
