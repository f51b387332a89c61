package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// admin calls the oauthconn admin API of the running configuration as
// Caddy's admin server would, and returns the status and body.
func admin(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	err := AdminAPI{}.serve(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	var apiErr caddy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatus, apiErr.Err.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, rec.Body.String()
}

// TestAdminRoutes: status, refresh, disconnect and import on Caddy's admin
// API, and their errors.
func TestAdminRoutes(t *testing.T) {
	startServer(t, testOptions{})
	for _, tt := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/oauthconn/connectors", "", 200, `"status":"authorization_required"`},
		{"POST", "/oauthconn/connectors/demo/refresh", "", 409, "needs authorization"},
		{"POST", "/oauthconn/connectors/nope/refresh", "", 404, "nope"},
		{"DELETE", "/oauthconn/connectors/demo", "", 404, "has no connection"},
		{"POST", "/oauthconn/connectors/demo/import", `{}`, 400, "refresh_token"},
		{"POST", "/oauthconn/connectors/demo/import", `{"refresh_token":"refused"}`, 409, "needs authorization"},
		{"POST", "/oauthconn/connectors/nope/import", `{"refresh_token":"x"}`, 404, "unknown connector"},
		{"POST", "/oauthconn/connectors/demo/import", `{"refresh_token":"rt-import"}`, 200, `"imported":true`},
		{"GET", "/oauthconn/connectors", "", 200, `"status":"connected"`},
		{"POST", "/oauthconn/connectors/demo/refresh", "", 200, `"refreshed":true`},
		{"DELETE", "/oauthconn/connectors/demo", "", 200, `"revocation":"no_revocation_url"`},
		{"GET", "/oauthconn/nothing", "", 404, "no such"},
	} {
		status, body := admin(t, tt.method, tt.path, tt.body)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", tt.method, tt.path, tt.body, status, body, tt.status, tt.want)
		}
		if strings.Contains(body, "rt-") || strings.Contains(body, "at-") {
			t.Errorf("%s %s: a token in the answer: %s", tt.method, tt.path, body)
		}
	}
	var st []map[string]any
	_, body := admin(t, "GET", "/oauthconn/connectors", "")
	if json.Unmarshal([]byte(body), &st) != nil || len(st) != 1 || st[0]["status"] != "authorization_required" {
		t.Fatalf("after disconnect: %s", body)
	}
}

// TestUpstream401: an upstream 401 refreshes the token and a replayable
// request is sent once more with the new one; a request whose body cannot
// be replayed gets the upstream's 401 as it is.
func TestUpstream401(t *testing.T) {
	s := startServer(t, testOptions{})
	s.connect(t, newClient())
	resp, body := newClient().do(t, "POST", s.base+"/demo/first-token-refused", http.Header{"Content-Type": {"text/plain"}}, "replay me")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("replayable: %d %s", resp.StatusCode, body)
	}
	if got := s.up.last(t).Header.Get("Authorization"); got != "Bearer at-2" {
		t.Fatalf("the retry carried %q", got)
	}

	s = startServer(t, testOptions{})
	s.connect(t, newClient())
	// A streamed body (no Content-Length) is never replayed.
	req, _ := http.NewRequest("POST", s.base+"/demo/first-token-refused", struct{ *strings.Reader }{strings.NewReader("streamed")})
	req.ContentLength = -1
	res, err := newClient().c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("streamed: %d", res.StatusCode)
	}
	if n := s.up.calls(); n != 1 {
		t.Fatalf("the upstream got %d requests; a streamed body must not be sent twice", n)
	}

	// With replay_limit off, no body is kept: the app gets the 401 and
	// sends again, with the refreshed token; a request without a body is
	// still retried.
	s = startServer(t, testOptions{proxy: "replay_limit off"})
	s.connect(t, newClient())
	resp, body = newClient().do(t, "POST", s.base+"/demo/first-token-refused", http.Header{"Content-Type": {"text/plain"}}, "send me once")
	if resp.StatusCode != http.StatusUnauthorized || s.up.calls() != 1 {
		t.Fatalf("replay off: %d %s after %d upstream requests; want the upstream's 401 after 1", resp.StatusCode, body, s.up.calls())
	}
	resp, body = newClient().do(t, "POST", s.base+"/demo/items", http.Header{"Content-Type": {"text/plain"}}, "send me again")
	if resp.StatusCode != http.StatusOK || s.up.last(t).Header.Get("Authorization") != "Bearer at-2" {
		t.Fatalf("sent again: %d %s with %q; want 200 with the refreshed token", resp.StatusCode, body, s.up.last(t).Header.Get("Authorization"))
	}
}

// TestReplayOffGetStillRetried: replay_limit off keeps no body, but a
// request without one is still sent again after a 401.
func TestReplayOffGetStillRetried(t *testing.T) {
	s := startServer(t, testOptions{proxy: "replay_limit 0"})
	s.connect(t, newClient())
	resp, body := newClient().do(t, "GET", s.base+"/demo/first-token-refused", nil, "")
	if resp.StatusCode != http.StatusOK || s.up.calls() != 2 || s.up.last(t).Header.Get("Authorization") != "Bearer at-2" {
		t.Fatalf("GET with replay off: %d %s after %d upstream requests; want 200 after 2, the second with at-2", resp.StatusCode, body, s.up.calls())
	}
}
