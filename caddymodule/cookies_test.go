package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestOneFlowCookiePerConnector: a browser holds one flow cookie per
// connector however often it starts authorizing; each new authorization
// replaces the previous one's cookie and ends that flow.
func TestOneFlowCookiePerConnector(t *testing.T) {
	s := startServer(t, testOptions{})
	b := newClient()
	names := map[string]bool{}
	var states []string
	for i := range 5 {
		st, resp := s.authorize(t, b)
		if st == "" {
			t.Fatalf("authorize %d: %d", i+1, resp.StatusCode)
		}
		states = append(states, st)
		for _, ck := range resp.Cookies() {
			names[ck.Name] = true
		}
	}
	u, _ := url.Parse(s.base + "/oauth/callback")
	var held []string
	for _, ck := range b.c.Jar.Cookies(u) {
		held = append(held, ck.Name)
	}
	if len(names) != 1 || len(held) != 1 {
		t.Fatalf("cookies set %v; the browser holds %v", names, held)
	}
	if n := pendingRecords(t, s); n != 1 {
		t.Fatalf("%d pending flows in the store; the replaced ones should be gone", n)
	}
	if resp, body := s.callback(t, b, states[0], "c0"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a replaced flow: %d %s", resp.StatusCode, body)
	}
	if resp, body := s.callback(t, b, states[4], "c4"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the last flow: %d %s", resp.StatusCode, body)
	}
	if held := b.c.Jar.Cookies(u); len(held) != 0 {
		t.Fatalf("the browser still holds %v after connecting", held)
	}
}

// TestHostCookieOnHTTPS: with an https public_url the flow cookie is a
// __Host- cookie (Secure, Path=/, no Domain), which no other host or
// insecure page can set or overwrite, and the callback accepts it.
func TestHostCookieOnHTTPS(t *testing.T) {
	s := startServer(t, testOptions{publicURL: "https://connect.example.com"})
	b := newClient()
	state, resp := s.authorize(t, b)
	if state == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	cks := resp.Cookies()
	if len(cks) != 1 {
		t.Fatalf("Set-Cookie: %v", resp.Header.Values("Set-Cookie"))
	}
	ck := cks[0]
	raw := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(ck.Name, "__Host-") || !ck.Secure || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
		t.Fatalf("flow cookie %s", raw)
	}
	// The test server is plain http, where a browser would not send a
	// Secure cookie: send it by hand.
	resp, body := b.do(t, "GET", s.base+"/oauth/callback?"+url.Values{"state": {state}, "code": {"c"}}.Encode(),
		http.Header{"Cookie": {ck.Name + "=" + ck.Value}}, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	cleared := resp.Cookies()
	if len(cleared) != 1 || cleared[0].Name != ck.Name || cleared[0].MaxAge >= 0 || cleared[0].Path != "/" || !cleared[0].Secure {
		t.Fatalf("clearing cookie: %v", resp.Header.Values("Set-Cookie"))
	}
}

// TestProxyStripsCookies: the upstream gets no cookie of the app's but
// those pass_cookies names, and never a flow cookie.
func TestProxyStripsCookies(t *testing.T) {
	for _, tt := range []struct {
		proxy, want string
	}{
		{"", ""},
		{"pass_cookies theme lang oauthconn_flow_demo", "theme=dark; lang=en"},
	} {
		s := startServer(t, testOptions{proxy: tt.proxy})
		s.connect(t, newClient())
		resp, body := newClient().do(t, "GET", s.base+"/demo/items", http.Header{
			"Cookie": {"session=s3cret; theme=dark", "oauthconn_flow_demo=x; lang=en"},
		}, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: %d %s", tt.proxy, resp.StatusCode, body)
		}
		if got := strings.Join(s.up.last(t).Header.Values("Cookie"), "; "); got != tt.want {
			t.Errorf("%q: the upstream got Cookie %q, want %q", tt.proxy, got, tt.want)
		}
		caddyStop(t)
	}
}
