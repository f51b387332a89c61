package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestBasePathRedirects: the base path without its slash leads to the
// connect page, with the usual oauthconn_connect /oauth/* matcher.
func TestBasePathRedirects(t *testing.T) {
	s := startServer(t, testOptions{})
	resp, body := newClient().do(t, "GET", s.base+"/oauth", nil, "")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/oauth/" {
		t.Fatalf("GET /oauth: %d to %q: %q", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	resp, body = newClient().do(t, "GET", s.base+"/oauth/", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /oauth/: %d %s", resp.StatusCode, body)
	}
	// Other paths are none of its business.
	if resp, _ := newClient().do(t, "GET", s.base+"/oauthx", nil, ""); resp.StatusCode == http.StatusFound {
		t.Fatal("GET /oauthx was redirected")
	}
}

func TestWithBasePaths(t *testing.T) {
	shared := caddy.ModuleMap{"path": json.RawMessage(`["/oauth/*"]`), "host": json.RawMessage(`["a.example"]`)}
	got := withBasePaths(shared)
	if string(got["path"]) != `["/oauth/*","/oauth"]` || string(got["host"]) != `["a.example"]` {
		t.Fatalf("widened: %s", got)
	}
	if string(shared["path"]) != `["/oauth/*"]` {
		t.Fatalf("the given matcher set changed: %s", shared["path"])
	}
	for _, set := range []caddy.ModuleMap{
		nil,
		{"path": json.RawMessage(`["/oauth/*","/oauth"]`)},
		{"path": json.RawMessage(`["/oauth/connectors/x"]`)},
		{"path": json.RawMessage(`["/*"]`)},
		{"host": json.RawMessage(`["a.example"]`)},
	} {
		if got := withBasePaths(set); fmt.Sprint(got) != fmt.Sprint(set) {
			t.Errorf("withBasePaths(%s) = %s", set, got)
		}
	}
}
