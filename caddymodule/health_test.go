package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// TestReadyzLivez: readyz is 200 while the file store takes writes and 503,
// with the reason, once it cannot; livez stays 200.
func TestReadyzLivez(t *testing.T) {
	s := startServer(t, testOptions{})
	c := newClient()
	resp, body := c.do(t, "GET", s.base+"/oauth/readyz", nil, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("readyz on a healthy store: %d %s", resp.StatusCode, body)
	}
	// The records directory becomes a file: nothing can be written.
	records := filepath.Join(s.storeDir, "oauthconn", "records")
	if err := os.RemoveAll(records); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(records, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(healthInterval + 100*time.Millisecond)
	resp, body = c.do(t, "GET", s.base+"/oauth/readyz", nil, "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"not_ready"`) || !strings.Contains(body, `"store":"writing a probe record`) {
		t.Fatalf("readyz on a broken store: %d %s", resp.StatusCode, body)
	}
	// The connectors' status and the page say why.
	resp, body = c.do(t, "GET", s.base+"/oauth/connectors", nil, "")
	if !strings.Contains(body, `"status":"unavailable"`) || !strings.Contains(body, `"store_error":"`) {
		t.Fatalf("status on a broken store: %d %s", resp.StatusCode, body)
	}
	if _, page := c.do(t, "GET", s.base+"/oauth/", nil, ""); !strings.Contains(page, "the store cannot be read") {
		t.Fatalf("the page does not show the store error:\n%s", page)
	}
	resp, body = c.do(t, "GET", s.base+"/oauth/livez", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("livez: %d %s", resp.StatusCode, body)
	}
}

// TestStoreHealthSingleFlight: however many callers, the store is checked
// at most once per healthInterval, and callers arriving during a check
// share its result.
func TestStoreHealthSingleFlight(t *testing.T) {
	var checks atomic.Int32
	release := make(chan struct{})
	now := time.Unix(1000, 0)
	var nowMu sync.Mutex
	h := newStoreHealth(func(context.Context) error {
		checks.Add(1)
		<-release
		return errors.New("sealed")
	})
	h.now = func() time.Time { nowMu.Lock(); defer nowMu.Unlock(); return now }
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.get(context.Background()); err == nil || err.Error() != "sealed" {
				t.Errorf("get: %v", err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := checks.Load(); n != 1 {
		t.Fatalf("50 concurrent callers ran %d checks, want 1", n)
	}
	_ = h.get(context.Background())
	if n := checks.Load(); n != 1 {
		t.Fatalf("a caller within the interval ran a check (%d)", n)
	}
	nowMu.Lock()
	now = now.Add(healthInterval)
	nowMu.Unlock()
	_ = h.get(context.Background())
	if n := checks.Load(); n != 2 {
		t.Fatalf("a caller after the interval did not check again (%d checks)", n)
	}
}

// TestCheckStoreVault: against the real Vault, the root token passes, and
// a token whose policy grants only reads is reported by the capabilities it
// lacks, without the token.
func TestCheckStoreVault(t *testing.T) {
	env := testservices.Vault(t)
	good, err := vault.New(vault.Config{Address: env.Addr, Token: env.Token, Prefix: "health-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := checkStore(ctx, good); err != nil {
		t.Fatalf("root token: %v", err)
	}
	weak := vaultTokenWithPolicy(t, good, `path "secret/data/health-test/*" { capabilities = ["read"] }`)
	bad, err := vault.New(vault.Config{Address: env.Addr, Token: weak, Prefix: "health-test"})
	if err != nil {
		t.Fatal(err)
	}
	err = checkStore(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "lacks create, update") {
		t.Fatalf("read-only token: %v", err)
	}
	if strings.Contains(err.Error(), weak) {
		t.Fatal("the error shows the token")
	}
	wrong, err := vault.New(vault.Config{Address: env.Addr, Token: "not-a-token", Prefix: "health-test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStore(ctx, wrong); err == nil || !strings.Contains(err.Error(), "token was refused") || strings.Contains(err.Error(), "not-a-token") {
		t.Fatalf("wrong token: %v", err)
	}
}

// vaultTokenWithPolicy makes a short-lived token holding only the policy
// with the given rules.
func vaultTokenWithPolicy(t *testing.T, root *vault.Store, rules string) string {
	t.Helper()
	name := "oauthconn-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	c := root.Client()
	if err := c.Sys().PutPolicy(name, rules); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Sys().DeletePolicy(name) })
	sec, err := c.Logical().Write("auth/token/create", map[string]any{"policies": []string{name}, "ttl": "10m"})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Auth.ClientToken
}
