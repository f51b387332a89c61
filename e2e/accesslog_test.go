package e2e

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAccessLogCanary: with a log directive on the site, a real flow
// through Hydra is in the access log (authorize, callback, the proxied
// request), but its authorization code, state and PKCE challenge are not.
func TestAccessLogCanary(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{site: "log {\n\t\toutput file " + logFile + "\n\t}"})
	b := newBrowser()
	var authURL *url.URL
	req, _ := http.NewRequest("GET", f.s.base+"/oauth/connectors/demo/authorize", nil)
	b.c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if authURL == nil {
			authURL = r.URL
		}
		if r.URL.Path == "/oauth/callback" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.c.CheckRedirect = nil
	cb, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || authURL == nil || cb.Path != "/oauth/callback" {
		t.Fatalf("the flow did not reach the callback: %d %v", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := b.as(t, "", cb.String()); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	if resp, body := b.as(t, "", f.s.base+"/demo/items"); resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy: %d %s", resp.StatusCode, body)
	}

	secrets := map[string]string{
		"code": cb.Query().Get("code"), "state": cb.Query().Get("state"),
		"PKCE challenge": authURL.Query().Get("code_challenge"),
		"access token":   f.s.stored(t, "demo")["access_token"].(string),
	}
	var logs string
	waitFor(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logFile)
		logs = string(b)
		return strings.Contains(logs, `"uri":"/demo/items"`)
	})
	for _, want := range []string{`"uri":"/oauth/connectors/demo/authorize"`, `"uri":"/oauth/callback?code=REDACTED&`, `&state=REDACTED`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the access log lacks %s", want)
		}
	}
	for name, v := range secrets {
		if len(v) < 8 {
			t.Fatalf("%s not captured", name)
		}
		if strings.Contains(logs, v) {
			t.Errorf("the access log contains the %s", name)
		}
	}
}
