package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// Port of TestTransitSealedRefresh's replica (admin: +100).
const portTransit = 9198

// TestTransitSealedRefresh runs the binary with `encrypt transit` against
// the real Vault and Hydra: the connection works, Vault's KV holds the
// tokens only as Transit ciphertext, and a refresh costs one Transit
// request, to encrypt the new tokens, as the test counts (with the KV
// requests) at a proxy in front of Vault.
func TestTransitSealedRefresh(t *testing.T) {
	env := testservices.Vault(t)
	root, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(env.Token)
	if err := root.Sys().Mount("transit", &vaultapi.MountInput{Type: "transit"}); err != nil && !strings.Contains(err.Error(), "already in use") {
		t.Fatal(err)
	}
	key := "e2e-" + hydradev.RandomHex(6)
	if _, err := root.Logical().Write("transit/keys/"+key, map[string]any{"derived": true}); err != nil {
		t.Fatal(err)
	}

	w := &faultWorld{h: newHydra(t), prefix: "e2e-transit-" + hydradev.RandomHex(6), vault: root}
	w.up = newUpstream(t, w.h)
	w.c = w.h.createClient(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portTransit), "client_secret_basic")
	w.tok = faultproxy.NewHTTP(t, w.h.PublicURL, faultproxy.GrantType)
	tokenPath := "/v1/secret/data/" + w.prefix + "/tokens/"
	vp := faultproxy.NewHTTP(t, env.Addr, func(r *http.Request) string {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/transit/"):
			return "transit"
		case strings.HasPrefix(r.URL.Path, tokenPath):
			return "token record"
		}
		return "other"
	})
	store := fmt.Sprintf("store vault {\n\t\t\taddress %s\n\t\t\ttoken {env.VAULT_TOKEN}\n\t\t\tprefix %s\n\t\t\tencrypt transit %s\n\t\t}", vp.URL, w.prefix, key)
	r := startBinary(t, portTransit, store, "max_wait 3s", w.replicaEnv(portTransit), "")
	connect(t, &sidecar{base: r.url()}, newBrowser())
	u := r.url() + "/demo/items"
	if o := get(http.DefaultClient, u); o.status != http.StatusOK {
		t.Fatalf("with sealed tokens: %v", o)
	}

	held := w.stored(t)
	for _, f := range []string{"access_token", "refresh_token"} {
		if v, _ := held[f].(string); !strings.HasPrefix(v, "vault:v1:") {
			t.Errorf("Vault's KV holds %s as %.12q…, want Transit ciphertext", f, v)
		}
	}
	if sent := w.up.last(t).Authorization; !strings.HasPrefix(sent, "Bearer ") || strings.Contains(fmt.Sprint(held), strings.TrimPrefix(sent, "Bearer ")) {
		t.Errorf("the access token the upstream received is in what Vault's KV holds")
	}

	// One refresh: requests, one at a time, until the 6 s token has
	// fallen due and been refreshed. Count from now on.
	t0, k0, r0 := vp.Count("transit"), vp.Count("token record"), w.tok.Count("refresh_token")
	ok := waitUntil(15*time.Second, func() bool {
		served := get(http.DefaultClient, u).status == http.StatusOK
		time.Sleep(100 * time.Millisecond)
		return served && w.tok.Succeeded("refresh_token") > r0
	})
	if !ok {
		t.Fatalf("no refresh; %s", w.tokenReport())
	}
	// Let a write that follows the refresh land.
	time.Sleep(time.Second)
	refreshes := w.tok.Count("refresh_token") - r0
	transit, records := vp.Count("transit")-t0, vp.Count("token record")-k0
	t.Logf("%d refresh: %d token record requests to Vault's KV, %d Transit requests", refreshes, records, transit)
	if refreshes != 1 {
		t.Fatalf("%d refreshes in the window, want 1", refreshes)
	}
	// The replica read and leased the tokens it had written, whose
	// ciphertext it remembers: only the new tokens are encrypted.
	if transit != 1 {
		t.Errorf("Transit requests = %d for %d token record requests, want 1: the new tokens' encryption", transit, records)
	}
	if w.tok.RedeemedTwice() != 0 || w.tok.ConcurrentRedemptions() != 0 {
		t.Errorf("a refresh token was redeemed twice; %s", w.tokenReport())
	}
	if v, _ := w.stored(t)["refresh_token"].(string); !strings.HasPrefix(v, "vault:v1:") {
		t.Errorf("after the refresh Vault's KV holds the refresh token as %.12q…", v)
	}
	// Unsealed, the record holds the last refresh token Hydra issued.
	s, err := vault.New(vault.Config{Address: env.Addr, Token: env.Token, Prefix: w.prefix, Encrypt: &vault.Transit{Key: key}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Get(context.Background(), "tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	if e.Data["refresh_token"] != w.tok.LastIssued() {
		t.Errorf("the sealed record does not hold the last refresh token Hydra issued; %s", w.tokenReport())
	}
}
