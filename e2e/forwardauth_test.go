package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// ssoSessions are the single sign-on sessions of the test auth server.
var ssoSessions = map[string]string{"alice-session": "alice", "bob-session": "bob"}

// newAuthServer is a forward_auth target: 200 with Remote-User for a known
// session cookie, 401 otherwise.
func newAuthServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie("sso")
		if err != nil || ssoSessions[ck.Value] == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Remote-User", ssoSessions[ck.Value])
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// signIn gives browser b the SSO session of user (none if empty).
func signIn(t *testing.T, b *browser, s *sidecar, user string) {
	t.Helper()
	u, _ := url.Parse(s.base)
	value := ""
	for sess, name := range ssoSessions {
		if name == user {
			value = sess
		}
	}
	if value == "" {
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "sso", Value: "", MaxAge: -1}})
		return
	}
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "sso", Value: value}})
}

// TestWhoMayConnectForwardAuth: with forward_auth in front of every
// connect route and user naming the header it copies, nobody signed out
// reaches a route, only the user who started a flow may finish it, and a
// Remote-User the client sends itself is not believed.
func TestWhoMayConnectForwardAuth(t *testing.T) {
	auth := newAuthServer(t)
	site := `forward_auth /oauth/* ` + strings.TrimPrefix(auth.URL, "http://") + ` {
		uri /verify
		copy_headers Remote-User
	}`
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{site: site, app: "user {http.request.header.Remote-User}"})
	b := newBrowser()
	for _, route := range []struct{ method, path string }{
		{"GET", "/oauth/connectors/demo/authorize"}, {"POST", "/oauth/connectors/demo/authorize"},
		{"GET", "/oauth/callback?state=x&code=y"}, {"GET", "/oauth/connectors"}, {"GET", "/oauth/"},
		{"DELETE", "/oauth/connectors/demo"},
	} {
		req, _ := http.NewRequest(route.method, f.s.base+route.path, nil)
		req.Header.Set("Remote-User", "alice") // forged: not believed
		if resp, _ := b.send(t, req, false); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("signed out, %s %s: %d", route.method, route.path, resp.StatusCode)
		}
	}

	signIn(t, b, f.s, "alice")
	cb := toCallback(t, b, f.s, "")
	before := f.counter.Total()
	signIn(t, b, f.s, "bob")
	req, _ := http.NewRequest("GET", cb, nil)
	req.Header.Set("Remote-User", "alice") // forward_auth replaces it with bob
	resp, body := b.send(t, req, false)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another user") || f.counter.Total() != before {
		t.Fatalf("bob finishing alice's flow: %d %s", resp.StatusCode, body)
	}
	signIn(t, b, f.s, "alice")
	cb = toCallback(t, b, f.s, "")
	if resp, body := b.as(t, "", cb); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice finishing her flow: %d %s", resp.StatusCode, body)
	}
	if rec := f.s.stored(t, "demo"); rec["connected_by"] != "alice" {
		t.Fatalf("connected_by = %v", rec["connected_by"])
	}
}
