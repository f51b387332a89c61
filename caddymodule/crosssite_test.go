package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestCrossSiteAuthorize: an authorization starts only when the user meant
// it. Another site's link gets a confirmation page whose same-origin form
// starts it; a typed URL, the connect page and non-browser clients are
// redirected at once; a cross-site POST is refused unless it is JSON.
func TestCrossSiteAuthorize(t *testing.T) {
	s := startServer(t, testOptions{})
	u := s.base + "/oauth/connectors/demo/authorize?return_to=/oauth/%3Fx%3D1"

	for _, hdr := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}},
		{"Sec-Fetch-Site": {"same-site"}},
		{"Origin": {"https://evil.example"}},
		{"Referer": {"https://evil.example/page"}},
	} {
		resp, body := newClient().do(t, "GET", u, hdr, "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
			t.Fatalf("GET %v: %d to %q", hdr, resp.StatusCode, resp.Header.Get("Location"))
		}
		if len(resp.Cookies()) != 0 {
			t.Fatalf("GET %v set %v: a flow started", hdr, resp.Header.Values("Set-Cookie"))
		}
		for _, want := range []string{`<form method="post" action="/oauth/connectors/demo/authorize">`,
			`name="return_to" value="/oauth/?x=1"`, "shared connection", "Connect demo"} {
			if !strings.Contains(body, want) {
				t.Fatalf("GET %v: the confirmation page lacks %q:\n%s", hdr, want, body)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline'; script") {
			t.Fatalf("CSP %q", csp)
		}
	}

	for _, hdr := range []http.Header{
		{"Sec-Fetch-Site": {"none"}},
		{"Sec-Fetch-Site": {"same-origin"}},
		{"Referer": {s.base + "/oauth/"}},
		{},
	} {
		if resp, _ := newClient().do(t, "GET", u, hdr, ""); resp.StatusCode != http.StatusFound {
			t.Fatalf("GET %v: %d, want a redirect", hdr, resp.StatusCode)
		}
	}

	// HEAD is served as GET: it starts nothing either.
	if resp, _ := newClient().do(t, "HEAD", u, http.Header{"Sec-Fetch-Site": {"cross-site"}}, ""); resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 0 {
		t.Fatalf("cross-site HEAD: %d %v", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}

	// Cross-site POSTs of simple content types are refused.
	for _, hdr := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}, "Content-Type": {"application/x-www-form-urlencoded"}},
		{"Origin": {"https://evil.example"}, "Content-Type": {"text/plain"}},
		{},
	} {
		if resp, body := newClient().do(t, "POST", u, hdr, ""); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %v: %d %s", hdr, resp.StatusCode, body)
		}
	}
	// JSON needs a preflight cross-site: allowed.
	if resp, body := newClient().do(t, "POST", u, http.Header{"Content-Type": {"application/json"}}, `{}`); resp.StatusCode != http.StatusOK || !strings.Contains(body, "authorization_url") {
		t.Fatalf("POST JSON: %d %s", resp.StatusCode, body)
	}

	// The confirmation page's form, sent same-origin, starts the flow and
	// the callback finishes it.
	b := newClient()
	resp, _ := b.do(t, "POST", s.base+"/oauth/connectors/demo/authorize", http.Header{
		"Sec-Fetch-Site": {"same-origin"}, "Origin": {s.base}, "Content-Type": {"application/x-www-form-urlencoded"},
	}, url.Values{"return_to": {"/oauth/?x=1"}}.Encode())
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc == nil || loc.Query().Get("state") == "" {
		t.Fatalf("form POST: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := s.callback(t, b, loc.Query().Get("state"), "c1")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/oauth/?x=1" {
		t.Fatalf("callback: %d to %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

// TestCrossSiteAuthorizeNamesTheSubject: for a per-user connector the
// confirmation page says whose account the connection will act as.
func TestCrossSiteAuthorizeNamesTheSubject(t *testing.T) {
	s := startServer(t, testOptions{connector: "subject {http.request.header.X-User}"})
	resp, body := newClient().do(t, "GET", s.base+"/oauth/connectors/demo/authorize",
		http.Header{"Sec-Fetch-Site": {"cross-site"}, "X-User": {"alice<b>"}}, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<strong>alice&lt;b&gt;</strong>") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}
