package caddymodule

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

func init() {
	caddy.RegisterModule(VaultStore{})
	caddy.RegisterModule(FileStore{})
}

// VaultStore keeps records in HashiCorp Vault's KV version 2 engine, so that
// any number of replicas share connections. Fields may hold placeholders.
type VaultStore struct {
	// Address is Vault's URL. Default: the VAULT_ADDR environment variable.
	Address string `json:"address,omitempty"`

	// Addresses are more URLs of the same Vault cluster (its other nodes,
	// say), tried in order after Address when the node in use cannot be
	// reached, is sealed, or has no active node to forward to; the store
	// then keeps the address that answered. Each must be a plain
	// scheme://host:port URL.
	Addresses []string `json:"addresses,omitempty"`

	// Token is the Vault token. Default: the VAULT_TOKEN environment
	// variable.
	Token string `json:"token,omitempty"`

	// Mount is the path at which the KV v2 engine is mounted. Default:
	// secret.
	Mount string `json:"mount,omitempty"`

	// Prefix is the folder below the mount that holds every record.
	// Default: caddy-oauthconn.
	Prefix string `json:"prefix,omitempty"`

	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string `json:"namespace,omitempty"`

	// Auth is how to log in to Vault. Default: the token (or VAULT_TOKEN).
	Auth *VaultAuth `json:"auth,omitempty"`

	// Timeout bounds each call to Vault, its retries included, so that a
	// Vault that does not answer turns into a clear error (and, for a
	// refresh, a token set kept in memory and written later) rather than
	// a request hanging. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxRetries is how many times a call that failed with a server error
	// or could not reach Vault is tried again, within Timeout. Default: 2.
	// Negative: no retries.
	MaxRetries int `json:"max_retries,omitempty"`

	// Encrypt, if set, seals the access and refresh tokens of every record
	// with a key of Vault's Transit engine. Default: tokens are stored as
	// Vault's KV holds them (encrypted by Vault's barrier, readable by any
	// token that may read the records).
	Encrypt *VaultEncrypt `json:"encrypt,omitempty"`
}

// VaultEncrypt says how the Vault store seals tokens. Fields may hold
// placeholders.
type VaultEncrypt struct {
	// Engine is the Vault engine that seals: transit.
	Engine string `json:"engine"`

	// Key is the Transit key's name. It must be a derived key (created
	// with derived=true): each record is sealed under the key derived for
	// its path.
	Key string `json:"key"`

	// Mount is where the Transit engine is mounted. Default: transit.
	Mount string `json:"mount,omitempty"`
}

// VaultAuth is a Vault login method. Fields may hold placeholders.
type VaultAuth struct {
	// Method is token, token_file, approle or kubernetes.
	Method string `json:"method"`

	// TokenFile is token_file's file, such as a Vault Agent sink; it is
	// re-read when it changes.
	TokenFile string `json:"token_file,omitempty"`

	// RoleID is AppRole's role ID.
	RoleID string `json:"role_id,omitempty"`

	// SecretID is AppRole's secret ID; prefer SecretIDFile.
	SecretID string `json:"secret_id,omitempty"`

	// SecretIDFile holds AppRole's secret ID, read at each login.
	SecretIDFile string `json:"secret_id_file,omitempty"`

	// Wrapped says the secret ID is a response-wrapping token to unwrap
	// (single-use: the file must be refreshed before the next login).
	Wrapped bool `json:"wrapped,omitempty"`

	// Role is the Kubernetes auth role.
	Role string `json:"role,omitempty"`

	// ServiceAccountTokenFile is the Kubernetes service account token,
	// re-read at each login. Default: the in-cluster path.
	ServiceAccountTokenFile string `json:"service_account_token_file,omitempty"`

	// MountPath is where the auth method is mounted. Default: approle or
	// kubernetes.
	MountPath string `json:"mount_path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (VaultStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "oauthconn.stores.vault",
		New: func() caddy.Module { return new(VaultStore) },
	}
}

// OpenStore makes the Vault client; it does not contact Vault.
func (v *VaultStore) OpenStore() (RecordStore, error) {
	repl := caddy.NewReplacer()
	exp := func(s string) string { return repl.ReplaceKnown(s, "") }
	cfg := vault.Config{
		Address:    exp(v.Address),
		Token:      exp(v.Token),
		Mount:      exp(v.Mount),
		Prefix:     exp(v.Prefix),
		Namespace:  exp(v.Namespace),
		Timeout:    time.Duration(v.Timeout),
		MaxRetries: v.MaxRetries,
	}
	if v.Timeout < 0 {
		return nil, fmt.Errorf("vault store: timeout must not be negative")
	}
	for _, a := range v.Addresses {
		cfg.Addresses = append(cfg.Addresses, exp(a))
	}
	if e := v.Encrypt; e != nil {
		if e.Engine != "transit" {
			return nil, fmt.Errorf("vault store: encrypt: unknown engine %q (transit)", e.Engine)
		}
		cfg.Encrypt = &vault.Transit{Key: exp(e.Key), Mount: exp(e.Mount)}
	}
	if a := v.Auth; a != nil {
		cfg.Auth = vault.Auth{
			Method: a.Method, TokenFile: exp(a.TokenFile), RoleID: exp(a.RoleID), SecretID: exp(a.SecretID),
			SecretIDFile: exp(a.SecretIDFile), Wrapped: a.Wrapped, Role: exp(a.Role),
			ServiceAccountTokenFile: exp(a.ServiceAccountTokenFile), MountPath: exp(a.MountPath),
		}
	}
	return vault.New(cfg)
}

// FileStore keeps records in files below a directory, each sealed with
// AES-256-GCM. It serves a single instance; use the Vault store to share
// connections between replicas.
type FileStore struct {
	// Path is the directory. Default: "oauthconn" in Caddy's data
	// directory.
	Path string `json:"path,omitempty"`

	// Key is the base64 encoding of the 32-byte encryption key. Default:
	// the key in KeyFile.
	Key string `json:"key,omitempty"`

	// KeyFile holds the base64 key. Default: "store.key" beside Path's
	// records; generated with mode 0600 on first start if missing.
	KeyFile string `json:"key_file,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (FileStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "oauthconn.stores.file",
		New: func() caddy.Module { return new(FileStore) },
	}
}

// OpenStore opens the directory, generating the key on first use.
func (f *FileStore) OpenStore() (RecordStore, error) {
	repl := caddy.NewReplacer()
	dir := repl.ReplaceKnown(f.Path, "")
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "oauthconn")
	}
	var key []byte
	var err error
	if k := repl.ReplaceKnown(f.Key, ""); k != "" {
		key, err = filestore.DecodeKey(k)
	} else {
		keyFile := repl.ReplaceKnown(f.KeyFile, "")
		if keyFile == "" {
			keyFile = filepath.Join(dir, "store.key")
		}
		key, err = filestore.LoadOrCreateKey(keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("file store key: %w", err)
	}
	return filestore.New(filepath.Join(dir, "records"), key)
}

// Interface guards.
var (
	_ StoreOpener = (*VaultStore)(nil)
	_ StoreOpener = (*FileStore)(nil)
)
