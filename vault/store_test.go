package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv/kvtest"
)

var prefixes atomic.Int64

// open makes a store on the test Vault under a prefix of its own.
func open(t *testing.T) *Store {
	env := testservices.Vault(t)
	prefix := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), prefixes.Add(1))
	s, err := New(Config{Address: env.Addr, Token: env.Token, Mount: "secret", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return open(t) })
}

func TestLayoutInVault(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if _, err := s.Put(ctx, "tokens/demo", map[string]string{"access_token": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	// Read it back with the raw API at the documented path.
	sec, err := s.Client().Logical().Read("secret/data/" + s.prefix + "/tokens/demo")
	if err != nil || sec == nil {
		t.Fatalf("raw read: %v", err)
	}
	data, _ := sec.Data["data"].(map[string]any)
	if data["access_token"] != "a" {
		t.Fatalf("raw data = %v", sec.Data)
	}
	// Delete leaves no version behind.
	if err := s.Delete(ctx, "tokens/demo"); err != nil {
		t.Fatal(err)
	}
	meta, err := s.Client().Logical().Read("secret/metadata/" + s.prefix + "/tokens/demo")
	if err != nil || meta != nil {
		t.Fatalf("metadata after delete = %v, %v; want none", meta, err)
	}
}

func TestErrorsCarryNoToken(t *testing.T) {
	env := testservices.Vault(t)
	const bad = "hvs.canary-vault-token-0123456789"
	s, err := New(Config{Address: env.Addr, Token: bad, Prefix: "x"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(context.Background(), "tokens/demo")
	if err == nil || errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get with a bad token: err = %v, want permission denied", err)
	}
	if strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("error %q: want status 403 and no token", err)
	}
}

func TestHealth(t *testing.T) {
	if err := open(t).Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Address: "http://127.0.0.1:1", Token: "x"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Health(ctx); err == nil {
		t.Fatal("health of an unreachable Vault succeeded")
	}
}

// TestLeastPrivilegePolicy runs the store's conformance suite with a token
// bound to exactly examples/vault-policy.hcl, and checks that the token
// reaches nothing outside its prefix.
func TestLeastPrivilegePolicy(t *testing.T) {
	env := testservices.Vault(t)
	policy, err := os.ReadFile("../examples/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	root, err := New(Config{Address: env.Addr, Token: env.Token})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Client().Sys().PutPolicy("caddy-oauthconn-test", string(policy)); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Client().Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{"caddy-oauthconn-test"}, NoDefaultPolicy: true, TTL: "10m",
	})
	if err != nil {
		t.Fatal(err)
	}
	token := sec.Auth.ClientToken
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, err := New(Config{Address: env.Addr, Token: token, Prefix: fmt.Sprintf("caddy-oauthconn/policy-%d-%d", time.Now().UnixNano(), prefixes.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	outside, _ := New(Config{Address: env.Addr, Token: token, Prefix: "someone-else"})
	if _, err := outside.Put(context.Background(), "tokens/x", map[string]string{"a": "b"}, 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("write outside the prefix: err = %v, want 403", err)
	}
}
