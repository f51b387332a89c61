package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// TestConnectRoutes: the page's script, unknown connectors, the no-script
// Disconnect form (same-origin only) and the proxy's answers before a
// connection exists.
func TestConnectRoutes(t *testing.T) {
	s := startServer(t, testOptions{})
	b := newClient()
	if resp, body := b.do(t, "GET", s.base+"/oauth/assets/connect.js", nil, ""); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || body == "" {
		t.Fatalf("connect.js: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := b.do(t, "GET", s.base+"/oauth/assets/nope.js", nil, ""); resp.StatusCode != 404 {
		t.Fatalf("a missing asset: %d", resp.StatusCode)
	}
	if resp, body := b.do(t, "GET", s.base+"/oauth/connectors/nope/authorize", nil, ""); resp.StatusCode != 404 || !strings.Contains(body, "unknown_connector") {
		t.Fatalf("unknown connector: %d %s", resp.StatusCode, body)
	}
	if resp, body := b.do(t, "DELETE", s.base+"/oauth/connectors/nope", nil, ""); resp.StatusCode != 404 {
		t.Fatalf("DELETE unknown connector: %d %s", resp.StatusCode, body)
	}
	if resp, body := b.do(t, "GET", s.base+"/demo/items", nil, ""); resp.StatusCode != 401 || !strings.Contains(body, "authorization_required") {
		t.Fatalf("proxy before connecting: %d %s", resp.StatusCode, body)
	}

	s.connect(t, b)
	form := s.base + "/oauth/connectors/demo/disconnect"
	if resp, _ := b.do(t, "POST", form, http.Header{"Sec-Fetch-Site": {"cross-site"}}, ""); resp.StatusCode != 403 {
		t.Fatalf("cross-site disconnect form: %d", resp.StatusCode)
	}
	if resp, body := b.do(t, "GET", s.base+"/demo/items", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("still connected: %d %s", resp.StatusCode, body)
	}
	resp, _ := b.do(t, "POST", form, http.Header{"Origin": {s.base}}, "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/oauth/" {
		t.Fatalf("same-origin disconnect form: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := b.do(t, "GET", s.base+"/demo/items", nil, ""); resp.StatusCode != 401 {
		t.Fatalf("after disconnecting: %d", resp.StatusCode)
	}
}

// TestUnconfiguredAndSubjects: an unconfigured connector answers 503 on
// its routes; a per-user connector needs a valid subject.
func TestUnconfiguredAndSubjects(t *testing.T) {
	s := startServer(t, testOptions{connector: "subject {http.request.header.X-User}"})
	for _, tt := range []struct {
		user   string
		status int
		want   string
	}{
		{"", 400, "subject_required"},
		{"..", 400, "invalid_subject"},
		{"alice", 401, "authorization_required"},
	} {
		resp, body := newClient().do(t, "GET", s.base+"/demo/items", http.Header{"X-User": {tt.user}}, "")
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("proxy as %q: %d %s", tt.user, resp.StatusCode, body)
		}
	}
	if resp, body := newClient().do(t, "GET", s.base+"/oauth/connectors/demo/authorize", nil, ""); resp.StatusCode != 400 || !strings.Contains(body, "subject_required") {
		t.Errorf("authorize without a subject: %d %s", resp.StatusCode, body)
	}
	caddyStop(t)

	s = startServer(t, testOptions{})
	s.load(t, strings.Replace(s.src, "client_id demo-client", "client_id {env.OAUTHCONN_TEST_UNSET}", 1))
	for _, u := range []string{"/oauth/connectors/demo/authorize", "/demo/items"} {
		resp, body := newClient().do(t, "GET", s.base+u, nil, "")
		if resp.StatusCode != 503 || !strings.Contains(body, "connector_unconfigured") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d %s", u, resp.StatusCode, body)
		}
	}
}
