package vault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// rootClient returns a root Vault client and the least-privilege policy
// installed under the name it returns.
func rootClient(t *testing.T) (*api.Client, string) {
	t.Helper()
	env := testservices.Vault(t)
	c, err := api.NewClient(&api.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(env.Token)
	policy, err := os.ReadFile("../examples/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy("caddy-oauthconn-auth-test", string(policy)); err != nil {
		t.Fatal(err)
	}
	return c, "caddy-oauthconn-auth-test"
}

// appRole enables AppRole at a fresh mount with a role whose tokens live 5
// seconds and at most 10, and returns the mount and the role ID.
func appRole(t *testing.T, root *api.Client, policy string) (string, string) {
	t.Helper()
	mount := "approle-" + hydradev.RandomHex(4)
	if err := root.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/caddy", map[string]any{
		"token_ttl": "5s", "token_max_ttl": "10s", "token_policies": policy,
	}); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Logical().Read("auth/" + mount + "/role/caddy/role-id")
	if err != nil {
		t.Fatal(err)
	}
	return mount, sec.Data["role_id"].(string)
}

// TestAppRoleKeepsServing: with 5 s tokens that can live at most 10 s, the
// store keeps working for 30 s, renewing and logging in again as needed.
func TestAppRoleKeepsServing(t *testing.T) {
	root, policy := rootClient(t)
	mount, roleID := appRole(t, root, policy)
	sec, err := root.Logical().Write("auth/"+mount+"/role/caddy/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	sidFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(sidFile, []byte(sec.Data["secret_id"].(string)), 0o600)
	s, err := New(Config{Address: root.Address(), Prefix: "caddy-oauthconn/approle-" + hydradev.RandomHex(4),
		Auth: Auth{Method: "approle", RoleID: roleID, SecretIDFile: sidFile, MountPath: mount}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	version, failures, n := 0, 0, 0
	tokens := map[string]bool{}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		n++
		v, err := s.Put(context.Background(), "tokens/demo", map[string]string{"n": fmt.Sprint(n)}, version)
		if err != nil {
			failures++
			t.Logf("write %d: %v", n, err)
			continue
		}
		version = v
		tokens[s.client.Token()] = true
	}
	if failures != 0 {
		t.Fatalf("%d of %d writes failed over 30 s", failures, n)
	}
	if len(tokens) < 3 {
		t.Fatalf("used %d tokens in 30 s of 10 s maximum TTL: no re-login happened", len(tokens))
	}
}

// TestAppRoleWrappedSecretID logs in with a response-wrapped secret ID.
func TestAppRoleWrappedSecretID(t *testing.T) {
	root, policy := rootClient(t)
	mount, roleID := appRole(t, root, policy)
	wrapping, _ := root.Clone()
	wrapping.SetToken(root.Token())
	wrapping.SetWrappingLookupFunc(func(string, string) string { return "60s" })
	sec, err := wrapping.Logical().Write("auth/"+mount+"/role/caddy/secret-id", nil)
	if err != nil || sec.WrapInfo == nil {
		t.Fatalf("wrapped secret ID: %v", err)
	}
	sidFile := filepath.Join(t.TempDir(), "wrapped-secret-id")
	os.WriteFile(sidFile, []byte(sec.WrapInfo.Token), 0o600)
	s, err := New(Config{Address: root.Address(), Prefix: "caddy-oauthconn/wrapped-" + hydradev.RandomHex(4),
		Auth: Auth{Method: "approle", RoleID: roleID, SecretIDFile: sidFile, Wrapped: true, MountPath: mount}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), "tokens/demo", map[string]string{"a": "b"}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestTokenFile: the store follows a token file that a Vault Agent rewrites.
func TestTokenFile(t *testing.T) {
	root, policy := rootClient(t)
	child := func() string {
		sec, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true, TTL: "10m"})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Auth.ClientToken
	}
	file := filepath.Join(t.TempDir(), "token")
	first := child()
	os.WriteFile(file, []byte(first+"\n"), 0o600)
	s, err := New(Config{Address: root.Address(), Prefix: "caddy-oauthconn/tokenfile-" + hydradev.RandomHex(4),
		Auth: Auth{Method: "token_file", TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, nil, time.Second); err != nil {
		t.Fatal(err)
	}
	v, err := s.Put(context.Background(), "tokens/demo", map[string]string{"a": "1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The agent writes a new token; the old one is revoked.
	time.Sleep(1100 * time.Millisecond) // a later modification time
	os.WriteFile(file, []byte(child()+"\n"), 0o600)
	if err := root.Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Put(context.Background(), "tokens/demo", map[string]string{"a": "2"}, v)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new token in the file was not picked up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAuthValidate(t *testing.T) {
	for _, a := range []Auth{{Method: "approle"}, {Method: "approle", RoleID: "r"}, {Method: "token_file"}, {Method: "kubernetes"}, {Method: "ldap"}} {
		if a.Validate() == nil {
			t.Errorf("%+v accepted", a)
		}
	}
	if err := (Auth{Method: "kubernetes", Role: "caddy"}).Validate(); err != nil {
		t.Fatal(err)
	}
}
