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
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

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
	// A record created through the policy keeps one version, and the
	// policy allows reading the metadata that repairs a record.
	bound, err := New(Config{Address: env.Addr, Token: token, Prefix: fmt.Sprintf("caddy-oauthconn/policy-%d-%d", time.Now().UnixNano(), prefixes.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := bound.Put(ctx, "tokens/demo", map[string]string{"a": "b"}, 0); err != nil {
		t.Fatal(err)
	}
	md, err := root.kv.GetMetadata(ctx, bound.full("tokens/demo"))
	if err != nil {
		t.Fatal(err)
	}
	if md.MaxVersions != 1 {
		t.Fatalf("max_versions of a record created through the policy = %d, want 1", md.MaxVersions)
	}
	if _, err := bound.kv.GetMetadata(ctx, bound.full("tokens/demo")); err != nil {
		t.Fatalf("reading metadata through the policy: %v", err)
	}
	outside, _ := New(Config{Address: env.Addr, Token: token, Prefix: "someone-else"})
	if _, err := outside.Put(context.Background(), "tokens/x", map[string]string{"a": "b"}, 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("write outside the prefix: err = %v, want 403", err)
	}
}

// TestMaxVersions: a record the store creates keeps only its current
// version, however often it is written; Config.MaxVersions changes that.
func TestMaxVersions(t *testing.T) {
	env := testservices.Vault(t)
	ctx := context.Background()
	for _, tt := range []struct{ cfg, want int }{{0, 1}, {3, 3}} {
		prefix := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), prefixes.Add(1))
		s, err := New(Config{Address: env.Addr, Token: env.Token, Prefix: prefix, MaxVersions: tt.cfg})
		if err != nil {
			t.Fatal(err)
		}
		v := 0
		for i := range 5 {
			if v, err = s.Put(ctx, "tokens/demo", map[string]string{"refresh_token": fmt.Sprint("r", i)}, v); err != nil {
				t.Fatal(err)
			}
		}
		md, err := s.kv.GetMetadata(ctx, s.full("tokens/demo"))
		if err != nil {
			t.Fatal(err)
		}
		if md.MaxVersions != tt.want || md.CurrentVersion != 5 || len(md.Versions) != tt.want {
			t.Fatalf("MaxVersions %d: metadata has max_versions %d, current version %d, %d versions; want %d, 5, %d",
				tt.cfg, md.MaxVersions, md.CurrentVersion, len(md.Versions), tt.want, tt.want)
		}
		if _, err := s.kv.GetVersion(ctx, s.full("tokens/demo"), 5-tt.want); !errors.Is(err, api.ErrSecretNotFound) {
			t.Fatalf("MaxVersions %d: reading a superseded version: err = %v, want not found", tt.cfg, err)
		}
	}
}

// TestVersionLimitFailureKeepsTheWrite: a token that may not write metadata
// still creates records; the store logs that it could not limit versions,
// without the token.
func TestVersionLimitFailureKeepsTheWrite(t *testing.T) {
	env := testservices.Vault(t)
	root, err := New(Config{Address: env.Addr, Token: env.Token})
	if err != nil {
		t.Fatal(err)
	}
	const policy = `
path "secret/data/caddy-oauthconn/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/caddy-oauthconn/*" { capabilities = ["list", "delete"] }
`
	if err := root.Client().Sys().PutPolicy("caddy-oauthconn-no-metadata", policy); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Client().Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{"caddy-oauthconn-no-metadata"}, NoDefaultPolicy: true, TTL: "10m",
	})
	if err != nil {
		t.Fatal(err)
	}
	token := sec.Auth.ClientToken
	s, err := New(Config{Address: env.Addr, Token: token, Prefix: fmt.Sprintf("caddy-oauthconn/nometa-%d-%d", time.Now().UnixNano(), prefixes.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, zap.New(core), time.Second); err != nil {
		t.Fatal(err)
	}
	v, err := s.Put(ctx, "tokens/demo", map[string]string{"a": "b"}, 0)
	if err != nil || v != 1 {
		t.Fatalf("Put = %d, %v; want version 1", v, err)
	}
	if e, err := s.Get(ctx, "tokens/demo"); err != nil || e.Data["a"] != "b" {
		t.Fatalf("Get = %+v, %v", e, err)
	}
	if logs.Len() != 1 {
		t.Fatalf("%d warnings, want 1", logs.Len())
	}
	entry := logs.All()[0]
	text := entry.Message
	for k, v := range entry.ContextMap() {
		text += fmt.Sprint(" ", k, "=", v)
	}
	if !strings.Contains(text, "403") || strings.Contains(text, token) {
		t.Fatalf("warning %q: want status 403 and no token", text)
	}
}

// TestDeletedLatestVersion: a record whose latest version was deleted or
// destroyed outside the store reads as missing, at the version that a
// check-and-set write replaces.
func TestDeletedLatestVersion(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	v, err := s.Put(ctx, "tokens/demo", map[string]string{"a": "1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v, err = s.Put(ctx, "tokens/demo", map[string]string{"a": "2"}, v); err != nil {
		t.Fatal(err)
	}
	if err := s.kv.Delete(ctx, s.full("tokens/demo")); err != nil {
		t.Fatal(err)
	}
	e, err := s.Get(ctx, "tokens/demo")
	if !errors.Is(err, kv.ErrNotFound) || e.Version != v {
		t.Fatalf("Get of a deleted version = %+v, %v; want not found at version %d", e, err, v)
	}
	if v, err = s.Put(ctx, "tokens/demo", map[string]string{"a": "3"}, e.Version); err != nil {
		t.Fatalf("write over a deleted version: %v", err)
	}
	if err := s.kv.Destroy(ctx, s.full("tokens/demo"), []int{v}); err != nil {
		t.Fatal(err)
	}
	e, err = s.Get(ctx, "tokens/demo")
	if !errors.Is(err, kv.ErrNotFound) || e.Version != v {
		t.Fatalf("Get of a destroyed version = %+v, %v; want not found at version %d", e, err, v)
	}
	if _, err := s.Put(ctx, "tokens/demo", map[string]string{"a": "4"}, e.Version); err != nil {
		t.Fatalf("write over a destroyed version: %v", err)
	}
	if e, err := s.Get(ctx, "tokens/demo"); err != nil || e.Data["a"] != "4" {
		t.Fatalf("Get = %+v, %v", e, err)
	}
}
