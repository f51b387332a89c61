package caddymodule

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAccessLogCanary: with a log directive on the site, the authorize and
// callback requests are in the access log, but no authorization code,
// state or PKCE challenge is.
func TestAccessLogCanary(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	s := startServer(t, testOptions{site: "log {\n\t\toutput file " + logFile + "\n\t}"})
	b := newClient()
	_, resp := s.authorize(t, b)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	state, challenge := loc.Query().Get("state"), loc.Query().Get("code_challenge")
	const code = "CANARY-code-4f1c9e"
	if resp, body := s.callback(t, b, state, code); resp.StatusCode != 303 {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	// A callback that fails, and one with a malformed query, are logged
	// the same way.
	s.callback(t, b, state, code+"-replayed")
	newClient().do(t, "GET", s.base+"/oauth/callback?code="+code+"-malformed&state=x&state=y", nil, "")

	caddyStop(t)
	b2, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := string(b2)
	for _, route := range []string{`/oauth/connectors/demo/authorize`, `/oauth/callback?`} {
		if strings.Count(logs, route) == 0 {
			t.Fatalf("the access log lacks %s:\n%s", route, logs)
		}
	}
	if n := strings.Count(logs, `"uri":"/oauth/callback?`); n != 3 {
		t.Fatalf("%d callback entries, want 3:\n%s", n, logs)
	}
	for name, secret := range map[string]string{"code": code, "state": state, "PKCE challenge": challenge} {
		if len(secret) < 8 {
			t.Fatalf("%s not captured", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the access log contains the %s:\n%s", name, logs)
		}
	}
}

func TestRedactURI(t *testing.T) {
	for _, tt := range []struct {
		uri      string
		callback bool
		want     string
	}{
		{"/oauth/callback?code=SECRET1&state=SECRET2&iss=https%3A%2F%2Fas.example", true, "/oauth/callback?code=REDACTED&state=REDACTED&iss=https%3A%2F%2Fas.example"},
		{"/oauth/callback?error=access_denied&error_description=no&state=SECRET2", true, "/oauth/callback?error=access_denied&error_description=no&state=REDACTED"},
		{"/oauth/callback?%73tate=SECRET2;code=SECRET1&&x", true, "/oauth/callback?%73tate=REDACTED&code=REDACTED&x=REDACTED"},
		{"/oauth/callback?iss;state=SECRET2", true, "/oauth/callback?iss&state=REDACTED"},
		{"/oauth/callback", true, "/oauth/callback"},
		{"/oauth/connectors/demo/authorize?return_to=%2Fapp", false, "/oauth/connectors/demo/authorize?return_to=%2Fapp"},
	} {
		if got := redactURI(tt.uri, tt.callback); got != tt.want {
			t.Errorf("redactURI(%q) = %q, want %q", tt.uri, got, tt.want)
		}
	}
	if got := redactLocation("https://as.example/authorize?state=SECRET&code_challenge=SECRET"); got != "https://as.example/authorize?REDACTED" {
		t.Errorf("redactLocation = %q", got)
	}
}
