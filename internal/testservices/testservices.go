// Package testservices tells tests where the real servers started by
// scripts/test (Vault and Ory Hydra) listen. Without them a test is skipped
// when run alone with `go test`, and fails when OAUTHCONN_REQUIRE_SERVICES is
// set, as scripts/test and CI set it.
package testservices

import (
	"os"
	"testing"
)

// VaultEnv holds how to reach the test Vault.
type VaultEnv struct {
	Addr, Token string
}

// Vault returns the test Vault's address and root token.
func Vault(t testing.TB) VaultEnv {
	t.Helper()
	v := VaultEnv{Addr: os.Getenv("VAULT_ADDR"), Token: os.Getenv("VAULT_TOKEN")}
	if v.Addr == "" || v.Token == "" {
		missing(t, "Vault (VAULT_ADDR, VAULT_TOKEN)")
	}
	return v
}

// HydraEnv holds how to reach the test Ory Hydra.
type HydraEnv struct {
	// PublicURL serves /oauth2/auth, /oauth2/token and /oauth2/revoke.
	PublicURL string
	// AdminURL serves clients, login/consent acceptance and introspection.
	AdminURL string
	// LoginAddr is where Hydra sends browsers to log in and consent: the
	// test serves it.
	LoginAddr string
}

// Hydra returns the test Hydra's URLs.
func Hydra(t testing.TB) HydraEnv {
	t.Helper()
	h := HydraEnv{PublicURL: os.Getenv("HYDRA_PUBLIC_URL"), AdminURL: os.Getenv("HYDRA_ADMIN_URL"), LoginAddr: os.Getenv("HYDRA_LOGIN_ADDR")}
	if h.PublicURL == "" || h.AdminURL == "" || h.LoginAddr == "" {
		missing(t, "Ory Hydra (HYDRA_PUBLIC_URL, HYDRA_ADMIN_URL, HYDRA_LOGIN_ADDR)")
	}
	return h
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("OAUTHCONN_REQUIRE_SERVICES") != "" {
		t.Fatalf("%s is not running; run the tests with scripts/test", what)
	}
	t.Skipf("%s is not running; run the tests with scripts/test", what)
}
