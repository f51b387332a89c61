package vault

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/vault/api"
)

// vaultError builds the error Vault's client returns for an answer with
// status and messages, wrapped the way api.KVv2.Get wraps it.
func vaultError(status int, messages ...string) error {
	re := &api.ResponseError{HTTPMethod: http.MethodGet, URL: "http://vault.test/v1/secret/data/caddy-oauthconn/tokens/demo", StatusCode: status, Errors: messages}
	return fmt.Errorf("error encountered while reading secret at secret/data/caddy-oauthconn/tokens/demo: %w", re)
}

func TestIsMissingVersionData(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"vault's answer", vaultError(500, "1 error occurred:\n\t* could not find version data\n\n"), true},
		{"unwrapped", &api.ResponseError{StatusCode: 500, Errors: []string{"could not find version data"}}, true},
		{"another message", vaultError(500, "internal error"), false},
		{"another status", vaultError(400, "could not find version data"), false},
		{"no messages", vaultError(500), false},
		{"not a response", errors.New("could not find version data"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := isMissingVersionData(tt.err); got != tt.want {
			t.Errorf("%s: isMissingVersionData = %t, want %t", tt.name, got, tt.want)
		}
	}
}

func TestIsCASMismatch(t *testing.T) {
	if !isCASMismatch(vaultError(400, "check-and-set parameter did not match the current version")) {
		t.Error("a check-and-set mismatch was not recognized")
	}
	if isCASMismatch(vaultError(400, "invalid request")) || isCASMismatch(vaultError(500, "check-and-set")) {
		t.Error("another error was taken for a check-and-set mismatch")
	}
}

func TestMaxVersionsConfig(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, 1}, {1, 1}, {5, 5}} {
		s, err := New(Config{Address: "http://127.0.0.1:1", Token: "x", MaxVersions: tt.in})
		if err != nil {
			t.Fatal(err)
		}
		if s.maxVersions != tt.want {
			t.Errorf("MaxVersions %d: store keeps %d, want %d", tt.in, s.maxVersions, tt.want)
		}
	}
	if _, err := New(Config{MaxVersions: -1}); err == nil {
		t.Error("a negative max_versions was accepted")
	}
}
