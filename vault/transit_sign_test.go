package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// transitWorld enables Transit at a mount of its own on the test Vault,
// creates keys there, and returns a store whose token is bound to exactly
// examples/vault-transit-sign-policy.hcl for the key named key.
func transitWorld(t *testing.T, key string, keyTypes map[string]string) (mount string, bound *Store) {
	t.Helper()
	env := testservices.Vault(t)
	root, err := New(Config{Address: env.Addr, Token: env.Token})
	if err != nil {
		t.Fatal(err)
	}
	mount = fmt.Sprintf("transit-test-%d", time.Now().UnixNano())
	if err := root.Client().Sys().Mount(mount, &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Client().Sys().Unmount(mount) })
	for name, typ := range keyTypes {
		if _, err := root.Client().Logical().Write(mount+"/keys/"+name, map[string]any{"type": typ}); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := os.ReadFile("../examples/vault-transit-sign-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(strings.ReplaceAll(string(policy), `"transit/`, `"`+mount+`/`), "graph-app", key)
	name := "transit-sign-" + mount
	if err := root.Client().Sys().PutPolicy(name, text); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	bound, err = New(Config{Address: env.Addr, Token: sec.Auth.ClientToken})
	if err != nil {
		t.Fatal(err)
	}
	return mount, bound
}

// TestTransitSigner signs RS256, PS256 and ES256 JWS inputs with Transit
// keys through a token bound to exactly the documented policy, and checks
// each signature with the public key Public returns.
func TestTransitSigner(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct{ typ, alg string }{
		{"rsa-2048", "RS256"}, {"rsa-2048", "PS256"}, {"ecdsa-p256", "ES256"},
	} {
		mount, bound := transitWorld(t, "graph-app", map[string]string{"graph-app": tt.typ, "other": tt.typ})
		s, err := bound.NewTransitSigner(mount, "graph-app")
		if err != nil {
			t.Fatal(err)
		}
		pub, err := s.Public(ctx)
		if err != nil {
			t.Fatalf("%s: %v", tt.typ, err)
		}
		input := []byte("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJjIn0")
		sig, err := s.Sign(ctx, pub, tt.alg, input)
		if err != nil {
			t.Fatalf("%s: %v", tt.alg, err)
		}
		h := sha256.Sum256(input)
		switch k := pub.(type) {
		case *rsa.PublicKey:
			if tt.alg == "PS256" {
				err = rsa.VerifyPSS(k, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			} else {
				err = rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig)
			}
		case *ecdsa.PublicKey:
			if len(sig) != 64 {
				t.Fatalf("ES256 signature of %d bytes", len(sig))
			}
			if !ecdsa.Verify(k, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				err = fmt.Errorf("bad signature")
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.alg, err)
		}
		// The policy allows this key only.
		other, _ := bound.NewTransitSigner(mount, "other")
		_, err = other.Public(ctx)
		var sc interface{ StatusCode() int }
		if err == nil || !errors.As(err, &sc) || sc.StatusCode() != 403 {
			t.Fatalf("reading another key through the policy: %v", err)
		}
	}
}

// TestTransitSignerSymmetricKey: a key without a public half is refused
// with a 4xx error that says which key types work.
func TestTransitSignerSymmetricKey(t *testing.T) {
	mount, bound := transitWorld(t, "sym", map[string]string{"sym": "aes256-gcm96"})
	s, _ := bound.NewTransitSigner(mount, "sym")
	_, err := s.Public(context.Background())
	var sc interface{ StatusCode() int }
	if err == nil || !errors.As(err, &sc) || sc.StatusCode() != 400 || !strings.Contains(err.Error(), "rsa-2048") {
		t.Fatalf("%v", err)
	}
}

// TestTransitSignerRotation: after the Transit key is rotated, Public
// gives the new version's key once its cache time is over, and a
// signature asked for with the previous public key (an assertion whose kid
// names it) is still made with the previous version.
func TestTransitSignerRotation(t *testing.T) {
	ctx := context.Background()
	mount, bound := transitWorld(t, "graph-app", map[string]string{"graph-app": "rsa-2048"})
	s, _ := bound.NewTransitSigner(mount, "graph-app")
	v1, err := s.Public(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env := testservices.Vault(t)
	root, _ := New(Config{Address: env.Addr, Token: env.Token})
	if _, err := root.Client().Logical().Write(mount+"/keys/graph-app/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Public(ctx); !again.(*rsa.PublicKey).Equal(v1) {
		t.Fatal("the public key changed before its cache time was over")
	}
	s.now = func() time.Time { return time.Now().Add(2 * transitKeyTTL) }
	v2, err := s.Public(ctx)
	if err != nil || v2.(*rsa.PublicKey).Equal(v1) {
		t.Fatalf("after rotation: %v, same key %t", err, err == nil && v2.(*rsa.PublicKey).Equal(v1))
	}
	input := []byte("header.claims")
	h := sha256.Sum256(input)
	for _, pub := range []crypto.PublicKey{v1, v2} {
		sig, err := s.Sign(ctx, pub, "RS256", input)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, h[:], sig); err != nil {
			t.Fatalf("signed with another version than asked: %v", err)
		}
	}
}
