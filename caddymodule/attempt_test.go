package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// A swallowed answer leaves nothing behind: neither its headers, nor the
// trailers that follow its body, nor changes to headers set before the
// attempt; with few headers before it and with more than the snapshot
// holds without copying.
func TestSwallowedAttemptLeavesNoHeaders(t *testing.T) {
	for _, before := range []int{1, 12} {
		t.Run(fmt.Sprint(before, " headers before"), func(t *testing.T) {
			w := httptest.NewRecorder()
			for i := range before {
				w.Header().Set(fmt.Sprint("X-Before-", i), "kept")
			}
			want := w.Header().Clone()
			f := &firstAttempt{decide: func(int) bool { return true }}
			f.begin(w)
			f.Header().Set("Www-Authenticate", `Bearer error="invalid_token"`)
			f.Header().Add("X-Before-0", "upstream")
			f.Header().Del(fmt.Sprint("X-Before-", before-1))
			f.WriteHeader(http.StatusUnauthorized)
			f.Write([]byte("refused"))
			f.Header().Set(http.TrailerPrefix+"X-Late", "t")
			if !f.swallowed || w.Body.Len() != 0 {
				t.Fatalf("swallowed %v, body %q", f.swallowed, w.Body.String())
			}
			f.undo() // as ServeHTTP does before the retry
			if !reflect.DeepEqual(w.Header(), want) {
				t.Fatalf("header after the swallowed answer: %v; want %v", w.Header(), want)
			}
		})
	}
}

// An answer that is not refused passes through with its headers.
func TestPassedAttemptWritesThrough(t *testing.T) {
	w := httptest.NewRecorder()
	f := &firstAttempt{decide: func(int) bool { return false }}
	f.begin(w)
	f.Header().Set("Www-Authenticate", "Bearer")
	f.WriteHeader(http.StatusUnauthorized)
	f.Write([]byte("no"))
	if w.Code != http.StatusUnauthorized || w.Header().Get("Www-Authenticate") != "Bearer" || w.Body.String() != "no" {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body.String())
	}
}

// upstreamRequest changes the app's request in place for the attempt, and
// restore gives the app's request back exactly: headers, URL and body;
// with the headers Connection names, and with paths that need escaping.
func TestUpstreamRequestIsRestored(t *testing.T) {
	for _, c := range []struct {
		name, target, connection string
		to                       target
		wantPath, wantRawPath    string
	}{
		{"prefix", "/items?x=1", "X-Hop", target{prefix: "/v1", rawPrefix: "/v1"}, "/v1/items", ""},
		{"escaped", "/a%2Fb?x=1", "X-Hop, Authorization", target{prefix: "/v1", rawPrefix: "/v1"}, "/v1/a/b", "/v1/a%2Fb"},
		{"escaped prefix", "/items?x=1", "Upgrade, X-Hop", target{prefix: "/sites/a b", rawPrefix: "/sites/a%20b"}, "/sites/a b/items", "/sites/a%20b/items"},
		{"resource itself", "/?x=1", "X-Hop", target{prefix: "/mcp", rawPrefix: "/mcp", exact: true}, "/mcp", ""},
		{"no prefix", "/items?x=1", "", target{}, "/items", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &ProxyHandler{}
			r := httptest.NewRequest(http.MethodPost, c.target, nil)
			r.Header.Set("Authorization", "Bearer app-credential")
			r.Header.Set("Proxy-Authorization", "Basic cHJveHk=")
			r.Header.Set("Cookie", "session=app")
			if c.connection != "" {
				r.Header.Set("Connection", c.connection)
			}
			r.Header.Set("X-Hop", "hop")
			r.Header.Add("Accept", "application/json")
			wantHeader, wantURL, wantBody := r.Header.Clone(), *r.URL, r.Body
			var app appRequest
			access := tokens.AccessOf(tokens.Token{AccessToken: "the-token"})
			out := h.upstreamRequest(r, &access, &c.to, nil, &app)
			got := map[string]string{}
			for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Connection", "X-Hop", "Accept"} {
				got[k] = out.Header.Get(k)
			}
			want := map[string]string{"Authorization": "Bearer the-token", "Proxy-Authorization": "", "Cookie": "", "Connection": "", "X-Hop": "", "Accept": "application/json"}
			if c.connection == "" {
				want["X-Hop"] = "hop"
			}
			if strings.Contains(c.connection, "Upgrade") {
				want["Connection"] = "Upgrade"
			}
			if !reflect.DeepEqual(got, want) || out.URL.Path != c.wantPath || out.URL.RawPath != c.wantRawPath || out.URL.RawQuery != "x=1" {
				t.Fatalf("upstream request: %v %q %q %q; want %v %q %q x=1", got, out.URL.Path, out.URL.RawPath, out.URL.RawQuery, want, c.wantPath, c.wantRawPath)
			}
			app.restore()
			if !reflect.DeepEqual(r.Header, wantHeader) || *r.URL != wantURL || r.Body != wantBody {
				t.Fatalf("after restore: %v %s; want the app's %v %s", r.Header, r.URL, wantHeader, &wantURL)
			}
		})
	}
}
