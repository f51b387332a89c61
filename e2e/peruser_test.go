package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// headersDo sends a request with extra headers through b.
func (b *browser) headersDo(t *testing.T, method, u string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return b.send(t, req, true)
}

// TestPerUserConnections: with a subject template, each user connects and
// is proxied with their own token, stored at their own escaped Vault path;
// a request that names no user, or a user without a connection, is told so.
func TestPerUserConnections(t *testing.T) {
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{connector: "subject {http.request.header.X-Tenant}/{http.request.header.X-User}"})
	users := map[string]map[string]string{
		"alice": {"X-Tenant": "acme", "X-User": "alice"},
		"bob":   {"X-Tenant": "acme", "X-User": "bob"},
	}
	app := newBrowser()
	resp, body := app.headersDo(t, "GET", f.s.base+"/demo/items", users["alice"])
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"error":"authorization_required"`) || strings.Contains(body, "alice") {
		t.Fatalf("alice before connecting: %d %s", resp.StatusCode, body)
	}
	for _, name := range []string{"alice", "bob"} {
		resp, body := newBrowser().headersDo(t, "GET", f.s.base+"/oauth/connectors/demo/authorize", users[name])
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "demo is connected") {
			t.Fatalf("%s connecting: %d %s", name, resp.StatusCode, body)
		}
	}
	tokens := map[string]string{}
	for _, name := range []string{"alice", "bob"} {
		sec, err := f.s.vault.Logical().Read("secret/data/" + f.s.prefix + "/tokens/demo/acme%2F" + name)
		if err != nil || sec == nil {
			t.Fatalf("%s's token is not at tokens/demo/acme%%2F%s: %v", name, name, err)
		}
		tokens[name] = sec.Data["data"].(map[string]any)["access_token"].(string)
		resp, _ := app.headersDo(t, "GET", f.s.base+"/demo/items", users[name])
		if resp.StatusCode != http.StatusOK || f.up.last(t).Authorization != "Bearer "+tokens[name] {
			t.Fatalf("%s proxied: %d with %q", name, resp.StatusCode, f.up.last(t).Authorization)
		}
	}
	if tokens["alice"] == tokens["bob"] {
		t.Fatal("alice and bob share a token")
	}
	for _, tt := range []struct {
		hdr  map[string]string
		code int
		want string
	}{
		{map[string]string{}, 400, "subject_required"},
		{map[string]string{"X-User": "alice"}, 400, "subject_required"},
		{map[string]string{"X-Tenant": "acme", "X-User": ".."}, 400, "invalid_subject"},
		{map[string]string{"X-Tenant": "acme", "X-User": "carol"}, 401, "authorization_required"},
	} {
		resp, body := app.headersDo(t, "GET", f.s.base+"/demo/items", tt.hdr)
		if resp.StatusCode != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%v: %d %s; want %d %s", tt.hdr, resp.StatusCode, body, tt.code, tt.want)
		}
	}
	_, body = app.headersDo(t, "GET", f.s.base+"/oauth/connectors", users["bob"])
	if !strings.Contains(body, `"per_user":true`) || !strings.Contains(body, `"subject":"acme/bob"`) || !strings.Contains(body, `"status":"connected"`) {
		t.Fatalf("bob's status: %s", body)
	}
	// Bob disconnects; alice is untouched.
	if resp, body := app.headersDo(t, "DELETE", f.s.base+"/oauth/connectors/demo", users["bob"]); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob disconnecting: %d %s", resp.StatusCode, body)
	}
	if resp, _ := app.headersDo(t, "GET", f.s.base+"/demo/items", users["alice"]); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice after bob left: %d", resp.StatusCode)
	}
	if resp, _ := app.headersDo(t, "GET", f.s.base+"/demo/items", users["bob"]); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bob after disconnecting: %d", resp.StatusCode)
	}
}
