package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv/kvtest"
)

// transitKey enables Transit at transit/ on the test Vault (if it is not
// already) and creates a key of the test's own, derived or not.
func transitKey(t *testing.T, root *api.Client, derived bool) string {
	t.Helper()
	if err := root.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil && !strings.Contains(err.Error(), "already in use") {
		t.Fatal(err)
	}
	key := "oauthconn-test-" + hydradev.RandomHex(6)
	if _, err := root.Logical().Write("transit/keys/"+key, map[string]any{"derived": derived}); err != nil {
		t.Fatal(err)
	}
	return key
}

// openSealed makes a store on the test Vault, under a prefix of its own,
// that seals tokens with key.
func openSealed(t *testing.T, token, key, prefix string) *Store {
	t.Helper()
	env := testservices.Vault(t)
	cfg := Config{Address: env.Addr, Token: token, Prefix: prefix}
	if key != "" {
		cfg.Encrypt = &Transit{Key: key}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newPrefix() string {
	return fmt.Sprintf("caddy-oauthconn/seal-%d-%d", time.Now().UnixNano(), prefixes.Add(1))
}

// raw reads what Vault's KV holds for the store's record at p.
func raw(t *testing.T, s *Store, p string) map[string]any {
	t.Helper()
	sec, err := s.Client().Logical().Read("secret/data/" + s.full(p))
	if err != nil || sec == nil {
		t.Fatalf("raw read of %s: %v", p, err)
	}
	d, _ := sec.Data["data"].(map[string]any)
	return d
}

// TestConformanceSealed runs the store contract's tests on a sealing
// store.
func TestConformanceSealed(t *testing.T) {
	env := testservices.Vault(t)
	root, _ := rootClient(t)
	key := transitKey(t, root, true)
	kvtest.Run(t, func(t *testing.T) kv.Store { return openSealed(t, env.Token, key, newPrefix()) })
}

// TestSealedTokensInVault: with encrypt transit, Vault's KV holds the
// tokens as Transit ciphertext and nothing of the tokens themselves; the
// store reads them back as they were written; check-and-set holds; a
// ciphertext moved to another record does not decrypt there.
func TestSealedTokensInVault(t *testing.T) {
	env := testservices.Vault(t)
	root, _ := rootClient(t)
	key := transitKey(t, root, true)
	s := openSealed(t, env.Token, key, newPrefix())
	ctx := context.Background()
	at, rt := "at-"+hydradev.RandomHex(16), "rt-"+hydradev.RandomHex(16)
	rec := map[string]string{"schema": "3", "access_token": at, "refresh_token": rt, "expiry": "2030-01-01T00:00:00Z"}
	v, err := s.Put(ctx, "tokens/demo", rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	held := raw(t, s, "tokens/demo")
	for _, f := range []string{"access_token", "refresh_token"} {
		c, _ := held[f].(string)
		if !strings.HasPrefix(c, "vault:v1:") {
			t.Errorf("Vault holds %s as %.12q…, want Transit ciphertext", f, c)
		}
	}
	for k, val := range held {
		if s, _ := val.(string); strings.Contains(s, at[3:]) || strings.Contains(s, rt[3:]) {
			t.Errorf("field %s of what Vault holds contains a token", k)
		}
	}
	if held["expiry"] != rec["expiry"] || held["schema"] != "3" {
		t.Errorf("bookkeeping fields changed: %v", held)
	}
	e, err := s.Get(ctx, "tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != v || e.Data["access_token"] != at || e.Data["refresh_token"] != rt || len(e.Data) != len(rec) {
		t.Fatalf("read back %d fields at version %d, want the %d written at %d", len(e.Data), e.Version, len(rec), v)
	}
	if rec["access_token"] != at {
		t.Fatal("Put changed its caller's map")
	}
	if _, err := s.Put(ctx, "tokens/demo", rec, v-1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale check-and-set write: %v, want a conflict", err)
	}

	// The same ciphertext under another record's path.
	if _, err := s.Client().Logical().Write("secret/data/"+s.full("tokens/other"), map[string]any{"data": held}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "tokens/other"); err == nil {
		t.Fatal("a ciphertext copied to another record decrypted there")
	} else if strings.Contains(err.Error(), "vault:v1:") {
		t.Fatalf("the error repeats the ciphertext: %v", err)
	}
}

// TestPlaintextRecordIsUpgraded: a record written without sealing is read
// as it is by a sealing store and sealed by its next write; a store that
// does not seal refuses a sealed record with a clear error.
func TestPlaintextRecordIsUpgraded(t *testing.T) {
	env := testservices.Vault(t)
	root, _ := rootClient(t)
	key := transitKey(t, root, true)
	prefix := newPrefix()
	plain := openSealed(t, env.Token, "", prefix)
	sealed := openSealed(t, env.Token, key, prefix)
	ctx := context.Background()
	v, err := plain.Put(ctx, "tokens/demo", map[string]string{"access_token": "at-plain", "refresh_token": "rt-plain"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := sealed.Get(ctx, "tokens/demo")
	if err != nil || e.Data["refresh_token"] != "rt-plain" || e.Version != v {
		t.Fatalf("plaintext record read by the sealing store: %v, %v", e, err)
	}
	if _, err := sealed.Put(ctx, "tokens/demo", map[string]string{"access_token": "at-2", "refresh_token": "rt-plain"}, e.Version); err != nil {
		t.Fatal(err)
	}
	if rtHeld, _ := raw(t, sealed, "tokens/demo")["refresh_token"].(string); !strings.HasPrefix(rtHeld, "vault:v1:") {
		t.Fatalf("after its next write Vault holds the refresh token as %.12q…, want ciphertext", rtHeld)
	}
	if _, err := plain.Get(ctx, "tokens/demo"); err == nil || !strings.Contains(err.Error(), "encrypt transit") {
		t.Fatalf("a non-sealing store reading a sealed record: %v, want a clear error", err)
	}
	// A record without tokens (a tombstone) is written as it is.
	if _, err := sealed.Put(ctx, "tokens/gone", map[string]string{"state": "disconnected"}, 0); err != nil {
		t.Fatal(err)
	}
	if d := raw(t, sealed, "tokens/gone"); len(d) != 1 {
		t.Fatalf("a record without tokens is held as %v", d)
	}
}

// TestSealedWithoutDecrypt: a token whose policy allows the KV records and
// Transit encrypt but not decrypt (a reader of the KV path, or a writer
// only) cannot read the tokens back, and the capability check says what
// it lacks.
func TestSealedWithoutDecrypt(t *testing.T) {
	root, kvPolicy := rootClient(t)
	key := transitKey(t, root, true)
	transit, err := os.ReadFile("../examples/vault-transit-seal-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	withKey := strings.ReplaceAll(string(transit), "caddy-oauthconn", key)
	// The documented policy works…
	if err := root.Sys().PutPolicy("transit-"+key, withKey); err != nil {
		t.Fatal(err)
	}
	// …and the same without decrypt does not.
	noDecrypt := strings.Replace(withKey, `path "transit/decrypt/`+key+`" {
  capabilities = ["update"]
}`, "", 1)
	if noDecrypt == withKey {
		t.Fatal("the policy example changed shape")
	}
	if err := root.Sys().PutPolicy("transit-nodecrypt-"+key, noDecrypt); err != nil {
		t.Fatal(err)
	}
	token := func(policies ...string) string {
		sec, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: policies, NoDefaultPolicy: false, TTL: "10m"})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Auth.ClientToken
	}
	prefix := "caddy-oauthconn/seal-" + hydradev.RandomHex(6)
	goodToken := token(kvPolicy, "transit-"+key)
	good := openSealed(t, goodToken, key, prefix)
	bad := openSealed(t, token(kvPolicy, "transit-nodecrypt-"+key), key, prefix)
	ctx := context.Background()
	if err := good.CheckCapabilities(ctx, "tokens/demo"); err != nil {
		t.Fatalf("the documented policies: %v", err)
	}
	if _, err := good.Put(ctx, "tokens/demo", map[string]string{"access_token": "at-x", "refresh_token": "rt-x"}, 0); err != nil {
		t.Fatal(err)
	}
	// Another store (with nothing remembered) decrypts through the policy.
	if e, err := openSealed(t, goodToken, key, prefix).Get(ctx, "tokens/demo"); err != nil || e.Data["refresh_token"] != "rt-x" {
		t.Fatalf("read through the documented policies: %v", err)
	}
	_, err = bad.Get(ctx, "tokens/demo")
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "rt-x") {
		t.Fatalf("read without decrypt: %v, want a 403", err)
	}
	if err := bad.CheckCapabilities(ctx, "tokens/demo"); err == nil || !strings.Contains(err.Error(), "transit/decrypt/"+key) {
		t.Fatalf("capability check without decrypt: %v", err)
	}
}

// TestSealKeyErrors: a missing key and a key that is not derived are
// reported as such, and nothing is written.
func TestSealKeyErrors(t *testing.T) {
	env := testservices.Vault(t)
	root, _ := rootClient(t)
	notDerived := transitKey(t, root, false)
	ctx := context.Background()
	for key, want := range map[string]string{
		"missing-" + hydradev.RandomHex(6): "does not exist",
		notDerived:                         "not a derived key",
	} {
		s := openSealed(t, env.Token, key, newPrefix())
		if err := s.CheckCapabilities(ctx, "tokens/demo"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %s: the store's check says %v, want %q", key, err, want)
		}
		_, err := s.Put(ctx, "tokens/demo", map[string]string{"access_token": "at-k"}, 0)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "derived=true") {
			t.Errorf("key %s: %v, want %q and how to create the key", key, err, want)
		}
		if sec, _ := s.Client().Logical().Read("secret/data/" + s.full("tokens/demo")); sec != nil {
			t.Errorf("key %s: a record was written", key)
		}
		if sec, _ := root.Logical().Read("transit/keys/" + key); strings.HasPrefix(key, "missing-") && sec != nil {
			t.Errorf("the missing key %s was created", key)
		}
	}
	if _, err := New(Config{Encrypt: &Transit{}}); err == nil {
		t.Error("encrypt transit without a key name was accepted")
	}
}

// TestSealCost counts the Vault requests of sealing stores. The replica
// that refreshes asks Transit once per refresh: its read and its lease
// write carry the tokens it last read or wrote, whose ciphertext it
// remembers, and only the new tokens are encrypted. Another replica
// decrypts once when it reads the changed record, and not again while it
// is unchanged. A record without tokens costs nothing.
func TestSealCost(t *testing.T) {
	env := testservices.Vault(t)
	root, _ := rootClient(t)
	key := transitKey(t, root, true)
	classify := func(r *http.Request) string {
		if strings.Contains(r.URL.Path, "/v1/transit/") {
			return "transit"
		}
		return "kv"
	}
	p := faultproxy.NewHTTP(t, env.Addr, classify)
	prefix := newPrefix()
	open := func() *Store {
		s, err := New(Config{Address: p.URL, Token: env.Token, Prefix: prefix, Encrypt: &Transit{Key: key}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	ctx := context.Background()
	v, err := a.Put(ctx, "tokens/demo", map[string]string{"access_token": "a1", "refresh_token": "r1"}, 0) // key check + encrypt
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "tokens/demo"); err != nil { // decrypt
		t.Fatal(err)
	}
	count := func(what string, want int, f func()) {
		t.Helper()
		t0, k0 := p.Count("transit"), p.Count("kv")
		f()
		if got := p.Count("transit") - t0; got != want {
			t.Errorf("%s: %d Transit requests, want %d", what, got, want)
		}
		t.Logf("%s: %d KV + %d Transit requests", what, p.Count("kv")-k0, p.Count("transit")-t0)
	}
	count("a refresh (read, lease write, new tokens written)", 1, func() {
		e, err := a.Get(ctx, "tokens/demo")
		if err != nil {
			t.Fatal(err)
		}
		e.Data["lease_holder"] = "a"
		if v, err = a.Put(ctx, "tokens/demo", e.Data, e.Version); err != nil {
			t.Fatal(err)
		}
		if v, err = a.Put(ctx, "tokens/demo", map[string]string{"access_token": "a2", "refresh_token": "r2"}, v); err != nil {
			t.Fatal(err)
		}
	})
	count("another replica's read of the new tokens", 1, func() {
		if e, err := b.Get(ctx, "tokens/demo"); err != nil || e.Data["access_token"] != "a2" || e.Data["refresh_token"] != "r2" {
			t.Fatalf("%v, %v", e.Data, err)
		}
	})
	count("its next read", 0, func() {
		if e, err := b.Get(ctx, "tokens/demo"); err != nil || e.Data["refresh_token"] != "r2" {
			t.Fatalf("%v, %v", e.Data, err)
		}
	})
	count("a record without tokens", 0, func() {
		if _, err := a.Put(ctx, "health/probe", map[string]string{"probe": "x"}, 0); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSealMemoIsBounded: the memo of recent ciphertexts keeps at most
// memoSize records.
func TestSealMemoIsBounded(t *testing.T) {
	var m sealMemo
	for i := range memoSize + 10 {
		m.put(fmt.Sprint(i), map[string]sealedPair{"access_token": {plain: "p", cipher: "c"}})
	}
	if len(m.m) != memoSize {
		t.Fatalf("memo holds %d records, want %d", len(m.m), memoSize)
	}
	if _, ok := m.get(fmt.Sprint(memoSize+9), "access_token"); !ok {
		t.Fatal("the last record is not remembered")
	}
}
