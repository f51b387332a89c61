package caddymodule

import (
	"context"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// storeOrigin says where the store's address came from, for the messages
// that report an unreachable store: an operator who does not know the
// address was defaulted looks for the fault in the wrong place.
func storeOrigin(opener StoreOpener) string {
	v, ok := opener.(*VaultStore)
	if !ok {
		return ""
	}
	// A placeholder that expands to nothing leaves the choice to the
	// Vault client, as no address at all does.
	expanded := caddy.NewReplacer().ReplaceKnown(v.Address, "")
	switch {
	case expanded != "" && expanded != v.Address:
		return "the store's address setting " + v.Address
	case expanded != "":
		return "the store's address setting"
	case os.Getenv(api.EnvVaultAddress) != "":
		return "the VAULT_ADDR environment variable"
	default:
		return defaultVaultOrigin
	}
}

// defaultVaultOrigin is the storeOrigin of a Vault address that nothing
// set: the Vault client then uses https://127.0.0.1:8200 without a word.
const defaultVaultOrigin = "Vault's default: no address is configured and VAULT_ADDR is unset"

// storeAddress is the store's address for messages, or its location.
func (a *App) storeAddress() string {
	if v, ok := a.rawStore.(*vault.Store); ok {
		return v.Address()
	}
	return a.rawStore.Location()
}

// checkStoreAtStart checks the store once as the app starts. With
// require_store_at_start a failure fails Start; otherwise the check runs
// in the background and a failure is logged, so that a store that comes
// up later does not keep Caddy down, and an operator still learns at once
// that it is not there.
func (a *App) checkStoreAtStart(ctx context.Context) error {
	report := func(err error) error {
		fields := []zap.Field{zap.String("address", a.storeAddress()), zap.Error(err)}
		if a.storeFrom != "" {
			fields = append(fields, zap.String("address_from", a.storeFrom))
		}
		msg := "the store is not usable: connections cannot be read or saved until it is; run `caddy-oauthconn oauthconn doctor` for details"
		if a.storeFrom == defaultVaultOrigin {
			msg = "the store is not usable, and the Vault address was not configured: VAULT_ADDR is unset, so the Vault client fell back to https://127.0.0.1:8200; set the store's address or VAULT_ADDR"
		}
		if a.RequireStoreAtStart {
			where := a.storeAddress()
			if a.storeFrom != "" {
				where += " (from " + a.storeFrom + ")"
			}
			return fmt.Errorf("oauthconn: require_store_at_start: the store at %s is not usable: %w", where, err)
		}
		a.logger.Warn(msg, fields...)
		return nil
	}
	if a.RequireStoreAtStart {
		if err := a.health.get(ctx); err != nil {
			return report(err)
		}
		return nil
	}
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		if err := a.health.get(ctx); err != nil && ctx.Err() == nil {
			_ = report(err)
		}
	}()
	return nil
}
