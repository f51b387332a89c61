package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

func adminDo(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://localhost:2999"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminAPI: status, forced refresh, disconnect and the import of a
// refresh token obtained elsewhere, through Caddy's admin endpoint and
// through the binary's oauthconn command.
func TestAdminAPI(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	connect(t, f.s, newBrowser())
	first := f.s.stored(t, "demo")

	code, body := adminDo(t, "GET", "/oauthconn/connectors", "")
	if code != http.StatusOK || !strings.Contains(body, `"name":"demo","status":"connected"`) || strings.Contains(body, first["access_token"].(string)) {
		t.Fatalf("status: %d %s", code, body)
	}

	code, body = adminDo(t, "POST", "/oauthconn/connectors/demo/refresh", "")
	if code != http.StatusOK || f.counter.Count("refresh_token") != 1 || f.s.stored(t, "demo")["access_token"] == first["access_token"] {
		t.Fatalf("refresh: %d %s, %d refreshes", code, body, f.counter.Count("refresh_token"))
	}

	// Disconnect without revocation: the refresh token stays good at the
	// provider, as one held by another system would be.
	rt := f.s.stored(t, "demo")["refresh_token"].(string)
	code, body = adminDo(t, "DELETE", "/oauthconn/connectors/demo", "")
	if code != http.StatusOK || !strings.Contains(body, `"disconnected":true`) || f.s.stored(t, "demo") != nil {
		t.Fatalf("disconnect: %d %s", code, body)
	}
	app := newBrowser()
	if resp, _ := app.do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after disconnect: %d", resp.StatusCode)
	}
	imp, _ := json.Marshal(map[string]string{"refresh_token": rt})
	code, body = adminDo(t, "POST", "/oauthconn/connectors/demo/import", string(imp))
	if code != http.StatusOK || !strings.Contains(body, `"imported":true`) || strings.Contains(body, rt) {
		t.Fatalf("import: %d %s", code, body)
	}
	if rec := f.s.stored(t, "demo"); rec["connected_by"] != "admin import" || rec["refresh_token"] == rt {
		t.Fatalf("imported record: connected_by %v, rotated %v", rec["connected_by"], rec["refresh_token"] != rt)
	}
	if resp, _ := app.do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("after import: %d", resp.StatusCode)
	}
	for _, tt := range []struct{ method, path string }{
		{"POST", "/oauthconn/connectors/nope/refresh"},
		{"POST", "/oauthconn/connectors/demo/refresh?subject=alice"},
		{"POST", "/oauthconn/connectors/demo/import"},
	} {
		if code, body := adminDo(t, tt.method, tt.path, "{}"); code < 400 || code >= 500 {
			t.Errorf("%s %s: %d %s, want a 4xx", tt.method, tt.path, code, body)
		}
	}

	// The command line.
	out, err := exec.Command(buildBinary(t), "oauthconn", "status", "--address", "localhost:2999").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"name":"demo"`) {
		t.Fatalf("oauthconn status: %v\n%s", err, out)
	}
	out, err = exec.Command(buildBinary(t), "oauthconn", "authorize", "demo", "--address", "localhost:2999").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "http://localhost:9080/oauth/connectors/demo/authorize" {
		t.Fatalf("oauthconn authorize: %v\n%s", err, out)
	}
	cmd := exec.Command(buildBinary(t), "oauthconn", "refresh", "demo", "--address", "localhost:2999")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"refreshed":true`) {
		t.Fatalf("oauthconn refresh: %v\n%s", err, out)
	}
}
