package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// TestBrowserRequestsRefused: a page on any site the operator visits cannot
// use the connection. Requests that carry Origin or Sec-Fetch-* (what
// browsers send, and server-side clients do not) get 403 and nothing
// reaches the upstream; preflights are answered here without granting
// anything. An app's plain request still goes through, without the
// upstream's CORS headers.
func TestBrowserRequestsRefused(t *testing.T) {
	s := startServer(t, testOptions{})
	s.connect(t, newClient())
	app := newClient()

	tests := []struct {
		name   string
		method string
		hdr    http.Header
	}{
		{"cross-site POST", "POST", http.Header{"Origin": {"https://evil.example"}, "Content-Type": {"text/plain"},
			"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"no-cors"}}},
		{"cross-site GET", "GET", http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Mode": {"cors"}}},
		{"GET without Origin (an image, a navigation)", "GET", http.Header{"Sec-Fetch-Site": {"cross-site"}, "Sec-Fetch-Dest": {"image"}}},
		{"Sec-Fetch-User alone (a user-activated navigation)", "GET", http.Header{"Sec-Fetch-User": {"?1"}}},
		{"Sec-Fetch-Dest alone", "GET", http.Header{"Sec-Fetch-Dest": {"document"}}},
		{"same-origin after DNS rebinding", "GET", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Sec-Fetch-Mode": {"cors"}}},
		{"Origin only (an older browser)", "DELETE", http.Header{"Origin": {"https://evil.example"}}},
		{"Origin null (a sandboxed frame)", "POST", http.Header{"Origin": {"null"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := s.up.calls()
			resp, body := app.do(t, tt.method, s.base+"/demo/items", tt.hdr, "x")
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"error":"browser_request_refused"`) {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
			if s.up.calls() != calls {
				t.Fatal("the request reached the upstream")
			}
			if h := corsHeaders(resp.Header); len(h) > 0 {
				t.Fatalf("a refused request got CORS headers: %v", h)
			}
		})
	}

	t.Run("preflight", func(t *testing.T) {
		calls := s.up.calls()
		resp, body := app.do(t, "OPTIONS", s.base+"/demo/items", http.Header{"Origin": {"https://evil.example"},
			"Access-Control-Request-Method": {"PUT"}, "Access-Control-Request-Headers": {"content-type"},
			"Access-Control-Request-Private-Network": {"true"}, "Sec-Fetch-Mode": {"cors"}}, "")
		if resp.StatusCode < 400 || s.up.calls() != calls {
			t.Fatalf("preflight: %d %s; upstream calls %d → %d", resp.StatusCode, body, calls, s.up.calls())
		}
		if h := corsHeaders(resp.Header); len(h) > 0 {
			t.Fatalf("the preflight granted %v", h)
		}
	})

	t.Run("an app's request goes through, without the upstream's CORS headers", func(t *testing.T) {
		resp, body := app.do(t, "GET", s.base+"/demo/items", nil, "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream") != "yes" {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		if got := s.up.last(t).Header.Get("Authorization"); got != "Bearer at-1" {
			t.Fatalf("upstream saw Authorization %q", got)
		}
		if h := corsHeaders(resp.Header); len(h) > 0 {
			t.Fatalf("the upstream's CORS headers reached the app: %v", h)
		}
	})

	t.Run("Node.js's fetch, which sends Sec-Fetch-Mode alone, goes through", func(t *testing.T) {
		resp, body := app.do(t, "GET", s.base+"/demo/items", http.Header{"Sec-Fetch-Mode": {"cors"}, "User-Agent": {"node"}}, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})

	t.Run("a plain OPTIONS of an app is proxied", func(t *testing.T) {
		calls := s.up.calls()
		resp, body := app.do(t, "OPTIONS", s.base+"/demo/items", nil, "")
		if resp.StatusCode != http.StatusOK || s.up.calls() != calls+1 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
}

// TestAllowBrowsers: origins named in allow_browsers may use the proxy from
// a browser; the proxy answers their CORS itself (the upstream's CORS
// headers never reach the browser), and every other origin is refused.
func TestAllowBrowsers(t *testing.T) {
	s := startServer(t, testOptions{proxy: "allow_browsers https://app.example.com http://localhost:3000"})
	s.connect(t, newClient())
	browser := newClient()
	const origin = "https://app.example.com"

	t.Run("preflight", func(t *testing.T) {
		calls := s.up.calls()
		resp, body := browser.do(t, "OPTIONS", s.base+"/demo/items", http.Header{"Origin": {origin},
			"Access-Control-Request-Method": {"PUT"}, "Access-Control-Request-Headers": {"content-type,x-trace-id"},
			"Access-Control-Request-Private-Network": {"true"},
			"Sec-Fetch-Mode":                         {"cors"}, "Sec-Fetch-Site": {"cross-site"}}, "")
		if resp.StatusCode != http.StatusNoContent || s.up.calls() != calls {
			t.Fatalf("preflight: %d %s; upstream calls %d → %d", resp.StatusCode, body, calls, s.up.calls())
		}
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "PUT") ||
			!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "x-trace-id") ||
			!strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Fatalf("preflight headers: %v", h)
		}
		if h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatal("the preflight allows credentials")
		}
		if h.Get("Access-Control-Allow-Private-Network") != "true" {
			t.Fatal("the preflight does not let the page reach a loopback address")
		}
	})

	t.Run("request", func(t *testing.T) {
		resp, body := browser.do(t, "PUT", s.base+"/demo/items", http.Header{"Origin": {origin},
			"Sec-Fetch-Mode": {"cors"}, "Sec-Fetch-Site": {"cross-site"}, "Content-Type": {"application/json"}}, "{}")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"path":"/items"`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		if got := s.up.last(t).Header.Get("Authorization"); got != "Bearer at-1" {
			t.Fatalf("upstream saw Authorization %q", got)
		}
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Fatalf("response headers: %v", h)
		}
		for _, k := range []string{"Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"} {
			if h.Get(k) != "" {
				t.Errorf("the upstream's %s reached the browser", k)
			}
		}
	})

	t.Run("an error of the proxy is readable by the allowed origin", func(t *testing.T) {
		resp, body := browser.do(t, "GET", "http://"+s.addr+"/demo/items", http.Header{"Origin": {"http://localhost:3000"}}, "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
			t.Fatalf("got %d %s %v", resp.StatusCode, body, resp.Header)
		}
	})

	t.Run("another origin is refused", func(t *testing.T) {
		calls := s.up.calls()
		for _, o := range []string{"https://evil.example", "https://app.example.com.evil.example", "http://app.example.com", "null"} {
			resp, body := browser.do(t, "POST", s.base+"/demo/items", http.Header{"Origin": {o}}, "x")
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "browser_request_refused") {
				t.Fatalf("origin %s: %d %s", o, resp.StatusCode, body)
			}
			if h := corsHeaders(resp.Header); len(h) > 0 {
				t.Fatalf("origin %s got %v", o, h)
			}
		}
		if s.up.calls() != calls {
			t.Fatal("a refused origin reached the upstream")
		}
	})
}

// corsHeaders returns the Access-Control-* headers of h.
func corsHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

func TestNormaliseOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example.com":     "https://app.example.com",
		"https://app.example.com:443": "https://app.example.com",
		"http://localhost:80/":        "http://localhost",
		"http://localhost:3000":       "http://localhost:3000",
		"https://[::1]:8443":          "https://[::1]:8443",
	} {
		if got, err := normaliseOrigin(in); err != nil || got != want {
			t.Errorf("normaliseOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"*", "null", "app.example.com", "ftp://x", "https://u@x", "https://x/p", "https://x?q"} {
		if _, err := normaliseOrigin(bad); err == nil {
			t.Errorf("normaliseOrigin(%q) accepted", bad)
		}
	}
}
