package e2e

import (
	"bytes"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestOpsCommands: readyz and livez on the Vault store, and the binary's
// doctor and its plain-text errors against the running sidecar.
func TestOpsCommands(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	for _, p := range []string{"/oauth/readyz", "/oauth/livez"} {
		resp, err := http.Get(f.s.base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
	}

	out, _ := exec.Command(buildBinary(t), "oauthconn", "doctor", "--address", "localhost:2999").CombinedOutput()
	text := string(out)
	t.Logf("doctor:\n%s", text)
	for _, want := range []string{"OK    demo authorization_url: ", "OK    demo redirect_uri: http://localhost:9080/oauth/callback",
		"OK    store: Vault at ", "OK    store: the Vault token has the capabilities the proxy needs"} {
		if !strings.Contains(text, want) {
			t.Errorf("doctor: no %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, f.c.Secret) {
		t.Fatalf("doctor shows the client secret:\n%s", text)
	}

	var stderr bytes.Buffer
	cmd := exec.Command(buildBinary(t), "oauthconn", "refresh", "nope", "--address", "localhost:2999")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("refreshing an unknown connector succeeded")
	}
	if got := stderr.String(); got != "caddy-oauthconn oauthconn refresh: unknown connector \"nope\" (admin API status 404)\n" {
		t.Fatalf("stderr %q", got)
	}
}
