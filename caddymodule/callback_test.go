package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCallbackFailures: each way a callback fails gets its own status and
// words, the flow cookie is cleared once the state is spent, and no token
// is stored. A provider refusing the code is told apart from a provider
// that cannot be reached, and the log carries the provider's error code,
// never its body.
func TestCallbackFailures(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "log.json")
	s := startServer(t, testOptions{global: "log {\n\t\toutput file " + logFile + "\n\t\tformat json\n\t}"})
	cb := s.base + "/oauth/callback?"
	start := func(b *client) string {
		t.Helper()
		st, resp := s.authorize(t, b)
		if st == "" {
			t.Fatalf("authorize: %d", resp.StatusCode)
		}
		return st
	}
	for _, tt := range []struct {
		name   string
		query  func(b *client) string
		other  bool // sent by another browser
		status int
		words  string
	}{
		{"malformed", func(*client) string { return "state=a&state=b" }, false, 400, "malformed"},
		{"unknown state", func(*client) string { return "state=nosuchstate&code=c" }, false, 400, "unknown or was already used"},
		{"another browser", func(b *client) string { return "state=" + start(b) + "&code=c" }, true, 403, "another browser"},
		{"provider error", func(b *client) string {
			return "state=" + start(b) + "&error=access_denied&error_description=no+%3Cthanks%3E"
		}, false, 400, "access_denied: no &lt;thanks&gt;"},
		{"code refused", func(b *client) string { return "state=" + start(b) + "&code=refused" }, false, 400, "refused to exchange"},
		{"no access token", func(b *client) string { return "state=" + start(b) + "&code=no-token" }, false, 502, "did not return an access token"},
	} {
		b := newClient()
		q := tt.query(b)
		sender := b
		if tt.other {
			sender = newClient()
		}
		resp, body := sender.do(t, "GET", cb+q, nil, "")
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.words) {
			t.Errorf("%s: %d, want %d with %q:\n%s", tt.name, resp.StatusCode, tt.status, tt.words, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
			t.Errorf("%s: CSP %q", tt.name, csp)
		}
	}
	if st := body(t, s); !strings.Contains(st, `"status":"authorization_required"`) {
		t.Fatalf("a failed callback connected: %s", st)
	}
	caddyStop(t)
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), `"error":"invalid_grant"`) || strings.Contains(string(logs), "echoed") {
		t.Errorf("the log should carry the provider's error code and not its body:\n%s", logs)
	}
}

// body returns the connectors' status as JSON text.
func body(t *testing.T, s *testServer) string {
	t.Helper()
	_, b := newClient().do(t, "GET", s.base+"/oauth/connectors", nil, "")
	return b
}

// TestCallbackProviderUnreachable: a token endpoint that cannot be reached
// is reported as such (502), not as a refusal.
func TestCallbackProviderUnreachable(t *testing.T) {
	s := startServer(t, testOptions{connector: "token_url http://127.0.0.1:1/token"})
	b := newClient()
	state, resp := s.authorize(t, b)
	if state == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	resp, page := s.callback(t, b, state, "c")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "Could not reach the provider") {
		t.Fatalf("%d %s", resp.StatusCode, page)
	}
}

// TestCallbackExpired: a flow finished after flow_ttl is refused as
// expired.
func TestCallbackExpired(t *testing.T) {
	s := startServer(t, testOptions{app: "flow_ttl 1s"})
	b := newClient()
	state, resp := s.authorize(t, b)
	if state == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond)
	if resp, page := s.callback(t, b, state, "c"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "expired") {
		t.Fatalf("%d %s", resp.StatusCode, page)
	}
}
