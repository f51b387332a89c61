package caddymodule

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// TestRequireStoreAtStart: with require_store_at_start, Caddy does not
// start on a Vault that does not answer, and says which address it tried
// and where that came from.
func TestRequireStoreAtStart(t *testing.T) {
	src := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	oauthconn {
		public_url http://127.0.0.1:%d
		require_store_at_start
		store vault {
			address http://127.0.0.1:1
			token   some-token
		}
	}
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	oauthconn_connect /oauth/*
}
`, t.TempDir(), freePort(t))
	cfg, err := adapt(src)
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil {
		caddyStop(t)
		t.Fatal("Caddy started on an unreachable store")
	}
	msg := err.Error()
	if !strings.Contains(msg, "require_store_at_start") || !strings.Contains(msg, "http://127.0.0.1:1") ||
		!strings.Contains(msg, "the store's address setting") || strings.Contains(msg, "some-token") {
		t.Fatalf("error: %v", err)
	}
}

// TestStoreCheckedAtStart: without require_store_at_start, an unreachable
// Vault is logged as a warning naming the address and where it came from,
// and the default address is called out as such.
func TestStoreCheckedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name, vaultAddr, address, origin, msg string
	}{
		{"configured", "", "http://127.0.0.1:1", "the store's address setting", "the store is not usable: connections"},
		{"VAULT_ADDR", "http://127.0.0.1:1", "", "the VAULT_ADDR environment variable", "the store is not usable: connections"},
		{"default", "", "", "Vault's default", "VAULT_ADDR is unset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VAULT_ADDR", tc.vaultAddr)
			opener := &VaultStore{Address: tc.address, Token: "some-token"}
			st, err := vault.New(vault.Config{Address: tc.address, Token: "some-token", MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.WarnLevel)
			a := &App{rawStore: st, storeFrom: storeOrigin(opener), logger: zap.New(core), background: new(sync.WaitGroup)}
			a.health = newStoreHealth(func(ctx context.Context) error { return checkStore(ctx, a.rawStore) })
			if err := a.checkStoreAtStart(context.Background()); err != nil {
				t.Fatal(err)
			}
			a.background.Wait()
			entries := logs.All()
			if len(entries) != 1 || !strings.Contains(entries[0].Message, tc.msg) {
				t.Fatalf("logged: %v", entries)
			}
			f := entries[0].ContextMap()
			if !strings.Contains(fmt.Sprint(f["address_from"]), tc.origin) || f["address"] == "" {
				t.Fatalf("fields: %v", f)
			}
			if strings.Contains(fmt.Sprint(f), "some-token") {
				t.Fatal("the token was logged")
			}
		})
	}
}

// TestStoreOrigin: the origin of the Vault address names the placeholder
// it was configured with, and one that expands to nothing counts as unset.
func TestStoreOrigin(t *testing.T) {
	t.Setenv("OAUTHCONN_TEST_VAULT", "http://vault.internal:8200")
	t.Setenv("OAUTHCONN_TEST_EMPTY", "")
	t.Setenv("VAULT_ADDR", "")
	for addr, want := range map[string]string{
		"http://vault.internal:8200": "the store's address setting",
		"{env.OAUTHCONN_TEST_VAULT}": "the store's address setting {env.OAUTHCONN_TEST_VAULT}",
		"{env.OAUTHCONN_TEST_EMPTY}": "Vault's default: no address is configured and VAULT_ADDR is unset",
		"":                           "Vault's default: no address is configured and VAULT_ADDR is unset",
	} {
		if got := storeOrigin(&VaultStore{Address: addr}); got != want {
			t.Errorf("%q: %q, want %q", addr, got, want)
		}
	}
	t.Setenv("VAULT_ADDR", "http://elsewhere:8200")
	if got := storeOrigin(&VaultStore{}); got != "the VAULT_ADDR environment variable" {
		t.Errorf("VAULT_ADDR: %q", got)
	}
	if got := storeOrigin(&FileStore{}); got != "" {
		t.Errorf("file store: %q", got)
	}
}

// TestRequireStoreAtStartCaddyfile: the option is a boolean, on when bare.
func TestRequireStoreAtStartCaddyfile(t *testing.T) {
	for body, want := range map[string]string{
		"require_store_at_start":       `"require_store_at_start":true`,
		"require_store_at_start true":  `"require_store_at_start":true`,
		"require_store_at_start false": `"oauthconn":{}`,
	} {
		out, err := adapt(global(body))
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s: %v\n%s", body, err, out)
		}
	}
	if _, err := adapt(global("require_store_at_start maybe")); err == nil || !strings.Contains(err.Error(), "true or false") {
		t.Errorf("a non-boolean: %v", err)
	}
}
