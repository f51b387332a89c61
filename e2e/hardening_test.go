package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testhttp"
)

// Test users of Caddy's basic_auth (bcrypt cost 4 to keep tests fast).
const basicAuthUsers = `basic_auth /oauth/* {
		alice $2a$04$lkzK/naoQuUXne1mfpqImeNxwlLQkFEXsuT0SIr8GZDikXECc0yI.
		bob $2a$04$aCKTEeHekC0EKu7JvYd.VOtkl4KMFDZQUa0aqXQ15CR9N/CdzPQIK
	}`

var passwords = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

// toCallback starts a flow as user (if any) and follows the browser through
// Hydra up to, not into, the callback; it returns the callback URL.
func toCallback(t *testing.T, b *browser, s *sidecar, user string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/oauth/connectors/demo/authorize", nil)
	if user != "" {
		req.SetBasicAuth(user, passwords[user])
	}
	var cb string
	b.c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Path == "/oauth/callback" {
			cb = r.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}
	defer func() { b.c.CheckRedirect = nil }()
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cb == "" {
		t.Fatalf("the flow did not reach the callback: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return cb
}

// as GETs u as user (basic auth; none if empty), not following redirects.
func (b *browser) as(t *testing.T, user, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if user != "" {
		req.SetBasicAuth(user, passwords[user])
	}
	return b.send(t, req, false)
}

// TestWhoMayConnect: with basic_auth in front of the connect routes, only
// an authenticated user may start a flow, only the same user may finish it,
// and the stored connection says who connected it.
func TestWhoMayConnect(t *testing.T) {
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{site: basicAuthUsers})
	b := newBrowser()
	if resp, _ := b.as(t, "", f.s.base+"/oauth/connectors/demo/authorize"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous authorize: %d", resp.StatusCode)
	}
	// basic_auth /oauth/* covers every route of oauthconn_connect.
	for _, route := range []struct{ method, path string }{
		{"POST", "/oauth/connectors/demo/authorize"}, {"GET", "/oauth/callback?state=x&code=y"},
		{"GET", "/oauth/connectors"}, {"GET", "/oauth/"}, {"DELETE", "/oauth/connectors/demo"},
	} {
		req, _ := http.NewRequest(route.method, f.s.base+route.path, nil)
		if resp, _ := b.send(t, req, false); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("anonymous %s %s: %d", route.method, route.path, resp.StatusCode)
		}
	}
	cb := toCallback(t, b, f.s, "alice")
	before := f.counter.Total()
	resp, body := b.as(t, "bob", cb)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another user") || f.counter.Total() != before {
		t.Fatalf("bob finishing alice's flow: %d %s", resp.StatusCode, body)
	}
	// The refusal ended that flow: its state redeems nothing any more.
	if resp, body := b.as(t, "alice", cb); resp.StatusCode != http.StatusBadRequest || f.counter.Total() != before {
		t.Fatalf("alice finishing the refused flow: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.as(t, "alice", toCallback(t, b, f.s, "alice"))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice finishing her flow: %d", resp.StatusCode)
	}
	if rec := f.s.stored(t, "demo"); rec["connected_by"] != "alice" || rec["connected_at"] == nil {
		t.Fatalf("stored connection metadata: connected_by=%v connected_at=%v", rec["connected_by"], rec["connected_at"])
	}
	_, body = b.as(t, "alice", f.s.base+"/oauth/connectors")
	if !strings.Contains(body, `"connected_by":"alice"`) {
		t.Fatalf("status = %s", body)
	}
}

// TestIssuerCheck: with issuer set, a callback naming another issuer is
// refused before any token request (RFC 9207); the right one passes.
func TestIssuerCheck(t *testing.T) {
	h := newHydra(t)
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{connector: "issuer " + h.PublicURL})
	b := newBrowser()
	cb := toCallback(t, b, f.s, "")
	before := f.counter.Total()
	resp, body := b.as(t, "", cb+"&iss="+url.QueryEscape("https://evil.example"))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "did not come from this connector") || f.counter.Total() != before {
		t.Fatalf("mix-up: %d %s", resp.StatusCode, body)
	}
	cb = toCallback(t, b, f.s, "")
	if resp, body := b.as(t, "", cb+"&iss="+url.QueryEscape(h.PublicURL)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right issuer: %d %s", resp.StatusCode, body)
	}
}

// TestRateLimits: per-address limits on authorize and callback answer 429
// with Retry-After; the cap on pending flows displaces the oldest flow
// rather than refusing a new one.
func TestRateLimits(t *testing.T) {
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{app: "rate_limit 5 1m\n\t\tmax_pending_flows 2"})
	var first string
	for i := range 3 {
		resp, _ := newBrowser().as(t, "", f.s.base+"/oauth/connectors/demo/authorize")
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("authorize %d: %d", i+1, resp.StatusCode)
		}
		if i == 0 {
			loc, _ := url.Parse(resp.Header.Get("Location"))
			first = loc.Query().Get("state")
		}
	}
	// The third displaced the first, whose state now redeems nothing.
	b := newBrowser()
	resp, body := b.as(t, "", f.s.base+"/oauth/callback?"+url.Values{"state": {first}, "code": {"y"}}.Encode())
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "unknown or was already used") {
		t.Fatalf("the displaced flow: %d %s", resp.StatusCode, body)
	}
	// One more request uses up the 5 per minute; the next is limited.
	b.as(t, "", f.s.base+"/oauth/callback?state=x&code=y")
	resp, body = b.as(t, "", f.s.base+"/oauth/callback?state=x&code=y")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many attempts") {
		t.Fatalf("6th request: %d %s", resp.StatusCode, body)
	}
	// The proxy and the status routes are not limited.
	if resp, _ := b.as(t, "", f.s.base+"/oauth/connectors"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status route: %d", resp.StatusCode)
	}
}

// rawRequest sends one HTTP/1.1 request as written (testhttp.Raw).
func rawRequest(t *testing.T, addr, raw string) *http.Response { return testhttp.Raw(t, addr, raw) }

// TestProxyConfinement: whatever the app sends, the request goes to the
// configured upstream only, with the connection's token only, and without
// the app's credentials or hop-by-hop headers.
func TestProxyConfinement(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	connect(t, f.s, newBrowser())
	upHost := strings.TrimPrefix(f.up.URL, "http://")
	bearer := "Bearer " + f.s.stored(t, "demo")["access_token"].(string)

	// Another server that must never see the token.
	elsewhere := &hydradev.API{Hydra: f.h.Hydra}
	elsewhereURL := serve(t, elsewhere)

	tests := []struct {
		name      string
		mustReach bool
		raw       string
	}{
		{"absolute-form target", false, "GET http://evil.example/demo/items HTTP/1.1\r\nHost: localhost:9080\r\n\r\n"},
		{"forwarded host", true, "GET /demo/items HTTP/1.1\r\nHost: localhost:9080\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n\r\n"},
		{"dot segments", false, "GET /demo/../demo/%2e%2e/items HTTP/1.1\r\nHost: localhost:9080\r\n\r\n"},
		{"encoded slashes", false, "GET /demo/%2f%2fevil.example/x HTTP/1.1\r\nHost: localhost:9080\r\n\r\n"},
		{"credentials in any case", true, "GET /demo/items HTTP/1.1\r\nHost: localhost:9080\r\nauthorization: Basic YTpi\r\nPROXY-AUTHORIZATION: Basic YTpi\r\nCookie: oauthconn_flow_1=x; keep=1\r\n\r\n"},
		{"hop-by-hop", true, "GET /demo/items HTTP/1.1\r\nHost: localhost:9080\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := f.up.Calls()
			rawRequest(t, "localhost:9080", tt.raw)
			if f.up.Calls() == calls {
				if tt.mustReach {
					t.Fatal("a valid request did not reach the upstream")
				}
				return // refused before the upstream: nothing was sent anywhere
			}
			got := f.up.last(t)
			if got.Host != upHost || got.Authorization != bearer || got.ProxyAuthorization != "" {
				t.Fatalf("upstream saw Host %q, Authorization %q, Proxy-Authorization %q", got.Host, got.Authorization, got.ProxyAuthorization)
			}
			for _, h := range []string{"X-Hop", "Keep-Alive", "Te", "Proxy-Connection"} {
				if v := got.Header.Get(h); v != "" && !(h == "Te" && v == "trailers") {
					t.Errorf("hop-by-hop header %s reached the upstream: %q", h, v)
				}
			}
			if strings.Contains(got.Cookie, "oauthconn_flow_") {
				t.Errorf("flow cookie reached the upstream: %q", got.Cookie)
			}
		})
	}

	t.Run("a redirect from the upstream is passed on, not followed", func(t *testing.T) {
		resp, _ := newBrowser().as(t, "", f.s.base+"/demo/redirect?to="+url.QueryEscape(elsewhereURL+"/steal"))
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != elsewhereURL+"/steal" {
			t.Fatalf("redirect: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if elsewhere.Calls() != 0 {
			t.Fatal("the proxy followed the upstream's redirect")
		}
	})
}

// TestReplaySafety: a body over replay_limit (64 KiB here) or of unknown
// length is never sent twice; the upstream's 401 comes through as it is.
func TestReplaySafety(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	connect(t, f.s, newBrowser())
	for _, tt := range []struct {
		name string
		send func(tok string) *http.Response
	}{
		{"body over the limit", func(string) *http.Response {
			resp, err := http.Post(f.s.base+"/demo/items", "application/octet-stream", bytes.NewReader(make([]byte, 65*1024)))
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}},
		{"streamed body", func(string) *http.Response {
			pr, pw := io.Pipe()
			go func() { pw.Write([]byte(`{"small":"but streamed"}`)); pw.Close() }()
			resp, err := http.Post(f.s.base+"/demo/items", "application/json", pr)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			time.Sleep(2100 * time.Millisecond) // past the 401 cooldown
			tok := f.s.stored(t, "demo")["access_token"].(string)
			f.up.Reject(tok)
			calls := f.up.Calls()
			resp := tt.send(tok)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "from the upstream") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if n := f.up.Calls() - calls; n != 1 {
				t.Fatalf("the upstream got the request %d times; want 1", n)
			}
			// The refresh still happened: the next request succeeds.
			waitFor(t, 5*time.Second, func() bool { return f.s.stored(t, "demo")["access_token"] != tok })
			if resp, body := newBrowser().do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
				t.Fatalf("next request: %d %s", resp.StatusCode, body)
			}
		})
	}
}
