package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// vaultAudit is a file audit device of the test Vault: Vault itself logs
// every request it serves, with its path, so a test counts what reached
// Vault rather than what the proxy thinks it sent.
type vaultAudit struct {
	path string
}

func enableVaultAudit(t *testing.T, vc *vaultapi.Client) *vaultAudit {
	t.Helper()
	a := &vaultAudit{path: filepath.Join(t.TempDir(), "audit.log")}
	name := "e2e-" + hydradev.RandomHex(4)
	if _, err := vc.Logical().Write("sys/audit/"+name, map[string]any{
		"type": "file", "options": map[string]any{"file_path": a.path},
	}); err != nil {
		t.Fatalf("enabling a Vault audit device: %v", err)
	}
	t.Cleanup(func() { vc.Logical().Delete("sys/audit/" + name) })
	return a
}

// requests counts the requests logged so far whose path contains
// pathPart, by operation (read, update, …).
func (a *vaultAudit) requests(t *testing.T, pathPart string) map[string]int {
	t.Helper()
	f, err := os.Open(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Path      string `json:"path"`
				Operation string `json:"operation"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "request" && strings.Contains(e.Request.Path, pathPart) {
			n[e.Request.Operation]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func total(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

// TestVaultRequestsPerRefresh counts, with Vault's own audit log, what a
// connection costs Vault: nothing while its token is fresh, however many
// requests use it, and at most three requests for a refresh (read the
// record, take the lease in it, write the new token set) however many
// requests wait for it.
func TestVaultRequestsPerRefresh(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	counter := h.countTokens(t)
	c := h.createClient(t, "http://localhost:9181/oauth/callback", "client_secret_basic")
	if err := h.SetAccessTokenLifespan(c, 12*time.Second); err != nil {
		t.Fatal(err)
	}
	venv := testservices.Vault(t)
	prefix := "e2e-audit-" + hydradev.RandomHex(6)
	env := []string{
		"STORE_PREFIX=" + prefix, "AS_AUTH_URL=" + h.PublicURL + "/oauth2/auth", "AS_TOKEN_URL=" + counter.URL + "/oauth2/token",
		"AS_CLIENT_ID=" + c.ID, "AS_CLIENT_SECRET=" + c.Secret, "DEMO_UPSTREAM=" + up.URL,
	}
	a := startReplica(t, 9181, env)
	vc, _ := vaultapi.NewClient(&vaultapi.Config{Address: venv.Addr})
	vc.SetToken(venv.Token)
	audit := enableVaultAudit(t, vc)
	record := prefix + "/tokens/demo"

	user := newBrowser()
	resp, body := user.do(t, "GET", a.url()+"/oauth/connectors/demo/authorize", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("connect: %d %s", resp.StatusCode, body)
	}
	sec, err := vc.Logical().Read("secret/data/" + record)
	if err != nil || sec == nil {
		t.Fatalf("reading the record: %v", err)
	}
	exp, _ := time.Parse(time.RFC3339, sec.Data["data"].(map[string]any)["expiry"].(string))
	if bad := storm(1, a.url()+"/demo/items"); bad != 0 {
		t.Fatal("the first proxied request failed")
	}

	t.Run("no Vault request on the hot path", func(t *testing.T) {
		before := total(audit.requests(t, record))
		if bad := storm(200, a.url()+"/demo/items"); bad != 0 {
			t.Fatalf("%d of 200 requests failed", bad)
		}
		if got := total(audit.requests(t, record)) - before; got != 0 {
			t.Fatalf("200 requests with a fresh token made %d Vault requests on the record; want 0", got)
		}
	})

	t.Run("a refresh costs at most three Vault requests", func(t *testing.T) {
		time.Sleep(time.Until(exp.Add(1100 * time.Millisecond)))
		before, refreshes := audit.requests(t, record), counter.Count("refresh_token")
		if bad := storm(100, a.url()+"/demo/items"); bad != 0 {
			t.Fatalf("%d of 100 requests after expiry failed", bad)
		}
		after := audit.requests(t, record)
		got := total(after) - total(before)
		if r := counter.Count("refresh_token") - refreshes; r != 1 || got > 3 || after["read"]-before["read"] > 1 {
			t.Fatalf("100 requests after expiry: %d refreshes, %d Vault requests on the record (%d reads); want 1 refresh, at most 3 requests, at most 1 read (%v → %v)",
				r, got, after["read"]-before["read"], before, after)
		}
		t.Logf("one refresh: %d Vault requests on the record (%v → %v)", got, before, after)
	})
}
