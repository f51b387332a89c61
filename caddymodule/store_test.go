package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// TestVaultStoreJSON opens Vault stores from JSON-shaped configuration:
// placeholders in the addresses are expanded, and an encrypt block with an
// unknown engine or no key is refused before anything is stored.
func TestVaultStoreJSON(t *testing.T) {
	t.Setenv("OAUTHCONN_TEST_VAULT_B", "http://vault-b:8200")
	st, err := (&VaultStore{Address: "http://vault-a:8200", Addresses: []string{"{env.OAUTHCONN_TEST_VAULT_B}"},
		Encrypt: &VaultEncrypt{Engine: "transit", Key: "k"}}).OpenStore()
	if err != nil {
		t.Fatal(err)
	}
	if got := st.(*vault.Store).Address(); got != "http://vault-a:8200 (of http://vault-a:8200, http://vault-b:8200)" {
		t.Errorf("Address() = %q", got)
	}
	for _, tt := range []struct {
		enc  VaultEncrypt
		want string
	}{
		{VaultEncrypt{Engine: "aes", Key: "k"}, `unknown engine "aes"`},
		{VaultEncrypt{Engine: "transit"}, "the key name is required"},
	} {
		if _, err := (&VaultStore{Encrypt: &tt.enc}).OpenStore(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("encrypt %+v: %v, want %q", tt.enc, err, tt.want)
		}
	}
}
