// Package vault keeps caddy-oauthconn's records in HashiCorp Vault's KV
// version 2 secrets engine. Every write is a check-and-set write. A record
// keeps only its current version (its max_versions is set when the store
// creates it), and deletes remove a record's metadata, so that no old
// version (an old refresh token, say) lingers in the secret's history.
package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Config says which Vault to talk to and where the records live.
type Config struct {
	// Address is Vault's URL. Empty: VAULT_ADDR, then Vault's default.
	Address string
	// Addresses are more URLs of the same Vault cluster (other nodes, or
	// other load balancers), tried in order after Address when the node
	// in use cannot be reached or cannot serve (sealed, or a standby
	// with no active node to forward to); the store then sticks to the
	// address that answered. Any node of a cluster serves every request:
	// standbys forward them to the active node.
	Addresses []string
	// Token is the Vault token. Empty: VAULT_TOKEN.
	Token string
	// Mount is the KV v2 mount path. Empty: "secret".
	Mount string
	// Prefix is the folder below the mount that holds every record.
	// Empty: "caddy-oauthconn".
	Prefix string
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string
	// Auth is how to log in (default: the token).
	Auth Auth
	// Timeout bounds each call to Vault, its retries included, so that an
	// unreachable or hung Vault fails a caller quickly rather than holding
	// it (Vault's client waits 60 seconds by default). Zero: the
	// VAULT_CLIENT_TIMEOUT environment variable if set, else
	// DefaultTimeout. It must not be negative.
	Timeout time.Duration
	// MaxRetries is how many times a call that failed with a server error
	// (5xx) or could not connect is retried, each after a wait of about a
	// second. Zero: the VAULT_MAX_RETRIES environment variable if set, else
	// DefaultMaxRetries. Negative: no retries.
	MaxRetries int
	// Encrypt, if set, seals the access and refresh tokens of every
	// record with Vault's Transit engine, under the key derived for the
	// record's path (see Transit), so that a reader of the KV path
	// without Transit's decrypt learns nothing usable. Records written
	// before are read as they are and sealed on their next write. A read
	// or write of tokens the store has not just read or written itself
	// costs one Transit request.
	Encrypt *Transit
	// MaxVersions is how many versions of a record Vault keeps; the store
	// writes it to a record's metadata when it creates the record. Vault
	// keeps the larger of this and the mount's own max_versions, so it only
	// has an effect on mounts that do not set a larger one. Zero:
	// DefaultMaxVersions. It must not be negative.
	MaxVersions int
}

// DefaultMaxVersions is the MaxVersions of a Config that sets none. Only
// the current version of a record is ever needed: every write is a
// check-and-set against the current version, and nothing reads an older
// one. Superseded versions would only keep old tokens, refresh tokens that
// some providers leave valid among them, in the secret's history.
const DefaultMaxVersions = 1

// DefaultTimeout is the Timeout of a Config that sets none.
const DefaultTimeout = 5 * time.Second

// DefaultMaxRetries is the MaxRetries of a Config that sets none.
const DefaultMaxRetries = 1

// Store is a kv.Store on Vault KV v2. It is safe for concurrent use.
type Store struct {
	auth        Auth
	client      *api.Client
	failover    *failover // nil with a single address
	sealer      *sealer   // nil without Encrypt
	kv          *api.KVv2
	mount       string
	prefix      string
	maxVersions int

	// log is set by Start; until then nothing is logged.
	log atomic.Pointer[zap.Logger]
}

// New makes a Store. It does not contact Vault.
func New(cfg Config) (*Store, error) {
	if err := cfg.Auth.Validate(); err != nil {
		return nil, err
	}
	maxVersions := cfg.MaxVersions
	switch {
	case maxVersions < 0:
		return nil, errors.New("vault: max_versions must not be negative")
	case maxVersions == 0:
		maxVersions = DefaultMaxVersions
	}
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault: reading environment: %w", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	// api.DefaultConfig has read VAULT_CLIENT_TIMEOUT and VAULT_MAX_RETRIES;
	// an explicit setting wins over them, and our defaults replace the
	// client's own, which let one call last minutes.
	switch {
	case cfg.Timeout < 0:
		return nil, errors.New("vault: the timeout must not be negative")
	case cfg.Timeout > 0:
		vc.Timeout = cfg.Timeout
	case os.Getenv(api.EnvVaultClientTimeout) == "":
		vc.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxRetries < 0:
		vc.MaxRetries = 0
	case cfg.MaxRetries > 0:
		vc.MaxRetries = cfg.MaxRetries
	case os.Getenv(api.EnvVaultMaxRetries) == "":
		vc.MaxRetries = DefaultMaxRetries
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: creating client: %w", err)
	}
	s := &Store{auth: cfg.Auth, client: client}
	if len(cfg.Addresses) > 0 {
		addrs, err := parseAddresses(append([]string{vc.Address}, cfg.Addresses...))
		if err != nil {
			return nil, err
		}
		// The client builds every request for the first address; the
		// transport sends it to the address in use.
		s.failover = &failover{next: vc.HttpClient.Transport, addrs: addrs, log: s.logger}
		vc.HttpClient.Transport = s.failover
	}
	if cfg.Token != "" {
		client.SetToken(cfg.Token)
	}
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	mount := strings.Trim(cfg.Mount, "/")
	if mount == "" {
		mount = "secret"
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix == "" {
		prefix = "caddy-oauthconn"
	}
	if cfg.Auth.Method != "" && cfg.Auth.Method != "token" && cfg.Token == "" {
		// Until the first login, no token: not VAULT_TOKEN's.
		client.ClearToken()
	}
	s.kv, s.mount, s.prefix, s.maxVersions = client.KVv2(mount), mount, prefix, maxVersions
	if cfg.Encrypt != nil {
		if s.sealer, err = newSealer(client, cfg.Encrypt); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) logger() *zap.Logger {
	if l := s.log.Load(); l != nil {
		return l
	}
	return zap.NewNop()
}

// Client returns the underlying Vault client.
func (s *Store) Client() *api.Client { return s.client }

// Address returns the Vault address the store talks to; with several, the
// one in use and all of them.
func (s *Store) Address() string {
	if s.failover == nil {
		return s.client.Address()
	}
	all := make([]string, len(s.failover.addrs))
	for i, a := range s.failover.addrs {
		all[i] = a.String()
	}
	return s.failover.current() + " (of " + strings.Join(all, ", ") + ")"
}

// Location names the store for humans and for sharing in-memory state between
// configurations that point at the same records: address, mount and prefix.
// With several addresses, the first names the cluster.
func (s *Store) Location() string {
	return "vault:" + s.client.Address() + "/" + s.mount + "/" + s.prefix
}

func (s *Store) full(p string) string { return path.Join(s.prefix, p) }

// kvPath is the record's path as Vault's CLI names it (vault kv get
// <mount>/<prefix>/<p>): the Transit context its tokens are sealed under.
func (s *Store) kvPath(p string) string { return s.mount + "/" + s.full(p) }

// Get implements kv.Store.
func (s *Store) Get(ctx context.Context, p string) (kv.Entry, error) {
	sec, err := s.kv.Get(ctx, s.full(p))
	if errors.Is(err, api.ErrSecretNotFound) {
		return kv.Entry{}, kv.ErrNotFound
	}
	if isMissingVersionData(err) {
		return s.missingVersionData(ctx, p)
	}
	if err != nil {
		return kv.Entry{}, fmt.Errorf("vault: reading %s: %w", p, cleanErr(err))
	}
	version := 0
	if sec.VersionMetadata != nil {
		version = sec.VersionMetadata.Version
	}
	if sec.Data == nil {
		// The latest version was soft-deleted: nothing to read, but a
		// create must name the version it replaces.
		return kv.Entry{Version: version}, kv.ErrNotFound
	}
	data := make(map[string]string, len(sec.Data))
	for k, v := range sec.Data {
		s, ok := v.(string)
		if !ok {
			return kv.Entry{}, fmt.Errorf("vault: reading %s: field %q is %T, not a string", p, k, v)
		}
		data[k] = s
	}
	if _, sealed := data[sealedMarker]; sealed {
		if s.sealer == nil {
			return kv.Entry{}, fmt.Errorf("vault: reading %s: its tokens are sealed with Transit; configure the store's encrypt transit key to read it", p)
		}
		if err := s.sealer.unseal(ctx, s.kvPath(p), data); err != nil {
			return kv.Entry{}, fmt.Errorf("vault: reading %s: %w", p, err)
		}
	}
	return kv.Entry{Data: data, Version: version}, nil
}

// Put implements kv.Store with a KV v2 check-and-set write.
func (s *Store) Put(ctx context.Context, p string, data map[string]string, cas int) (int, error) {
	if s.sealer != nil {
		sealed, err := s.sealer.seal(ctx, s.kvPath(p), data)
		if err != nil {
			return 0, fmt.Errorf("vault: writing %s: %w", p, err)
		}
		data = sealed
	}
	m := make(map[string]any, len(data))
	for k, v := range data {
		m[k] = v
	}
	sec, err := s.kv.Put(ctx, s.full(p), m, api.WithCheckAndSet(cas))
	if err != nil {
		if isCASMismatch(err) {
			return 0, fmt.Errorf("vault: writing %s: %w", p, kv.ErrConflict)
		}
		return 0, fmt.Errorf("vault: writing %s: %w", p, cleanErr(err))
	}
	if sec == nil || sec.VersionMetadata == nil {
		return 0, fmt.Errorf("vault: writing %s: response carries no version", p)
	}
	if cas == 0 {
		s.limitVersions(ctx, p)
	}
	return sec.VersionMetadata.Version, nil
}

// limitVersions sets the max_versions of the record just created at p, so
// that Vault drops superseded versions (see DefaultMaxVersions). Setting it
// once, at creation, is enough: it stays until the record is deleted with
// its metadata. The record is written already, so a failure does not fail
// the write: it is logged, and the record keeps the mount's max_versions.
func (s *Store) limitVersions(ctx context.Context, p string) {
	// A write of max_versions alone leaves the metadata's other settings
	// as they are, unlike api.KVv2.PutMetadata, which resets them.
	_, err := s.client.Logical().WriteWithContext(ctx, s.mount+"/metadata/"+s.full(p), map[string]any{"max_versions": s.maxVersions})
	if err != nil {
		s.logger().Warn("could not limit the versions Vault keeps of a new record; it keeps the mount's max_versions",
			zap.String("path", p), zap.Int("max_versions", s.maxVersions), zap.Error(cleanErr(err)))
	}
}

// missingVersionData answers Get for a record whose metadata names a current
// version whose data is gone, as a delete interrupted half way leaves it: the
// record is absent, at the version that a check-and-set write must name to
// replace it. Without this, every read of the record would fail and nothing
// would ever write it again; with it, the next write repairs it.
func (s *Store) missingVersionData(ctx context.Context, p string) (kv.Entry, error) {
	md, err := s.kv.GetMetadata(ctx, s.full(p))
	if errors.Is(err, api.ErrSecretNotFound) {
		return kv.Entry{}, kv.ErrNotFound // deleted meanwhile
	}
	if err != nil {
		return kv.Entry{}, fmt.Errorf("vault: reading %s: %w", p, cleanErr(err))
	}
	return kv.Entry{Version: md.CurrentVersion}, kv.ErrNotFound
}

// Delete implements kv.Store by deleting the secret's metadata, which removes
// every version.
func (s *Store) Delete(ctx context.Context, p string) error {
	if err := s.kv.DeleteMetadata(ctx, s.full(p)); err != nil {
		return fmt.Errorf("vault: deleting %s: %w", p, cleanErr(err))
	}
	return nil
}

// List implements kv.Store.
func (s *Store) List(ctx context.Context, dir string) ([]string, error) {
	sec, err := s.client.Logical().ListWithContext(ctx, s.mount+"/metadata/"+s.full(dir))
	if err != nil {
		return nil, fmt.Errorf("vault: listing %s: %w", dir, cleanErr(err))
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	raw, _ := sec.Data["keys"].([]any)
	names := make([]string, 0, len(raw))
	for _, k := range raw {
		if name, ok := k.(string); ok && !strings.HasSuffix(name, "/") {
			names = append(names, name)
		}
	}
	return names, nil
}

// Health checks that Vault answers and is unsealed.
func (s *Store) Health(ctx context.Context) error {
	h, err := s.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault: health: %w", cleanErr(err))
	}
	if !h.Initialized || h.Sealed {
		return fmt.Errorf("vault: health: initialized=%t sealed=%t", h.Initialized, h.Sealed)
	}
	return nil
}

func isCASMismatch(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "check-and-set") {
			return true
		}
	}
	return false
}

// isMissingVersionData reports whether err is Vault KV v2's answer to a read
// of a record whose current version has metadata but no data: status 500
// and "could not find version data".
func isMissingVersionData(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusInternalServerError {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "could not find version data") {
			return true
		}
	}
	return false
}

// cleanErr reduces a Vault response error to its status and Vault's own
// messages. Vault's errors never carry the client token, but they do repeat
// the request URL; the path is already part of our wrapping.
func cleanErr(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return &responseError{status: re.StatusCode, messages: re.Errors}
	}
	return err
}

type responseError struct {
	status   int
	messages []string
}

func (e *responseError) Error() string {
	if len(e.messages) == 0 {
		return fmt.Sprintf("status %d", e.status)
	}
	return fmt.Sprintf("status %d: %s", e.status, strings.Join(e.messages, "; "))
}

// StatusCode returns the HTTP status Vault answered with.
func (e *responseError) StatusCode() int { return e.status }

// Interface guard.
var _ kv.Store = (*Store)(nil)

// neededCapabilities are what the store's calls need on each kind of path
// below the prefix: KV v2 reads and check-and-set writes go to data/,
// List, the version limit and the deletes of every version to metadata/.
var neededCapabilities = []struct {
	kind string
	caps []string
}{
	{"data", []string{"create", "read", "update"}},
	{"metadata", []string{"read", "update", "delete", "list"}},
}

// CheckCapabilities asks Vault (sys/capabilities-self) whether the store's
// token may do what the store needs on a record below the prefix, and with
// the Transit key when it seals tokens (the key must also exist and be
// derived), so that a token with the wrong policy is reported by what it
// lacks rather than by the first request it fails. p is a record path,
// relative to the prefix.
func (s *Store) CheckCapabilities(ctx context.Context, p string) error {
	type need struct {
		full string
		caps []string
	}
	var needs []need
	for _, n := range neededCapabilities {
		needs = append(needs, need{s.mount + "/" + n.kind + "/" + s.full(p), n.caps})
	}
	if s.sealer != nil {
		for _, c := range s.sealer.capabilities() {
			needs = append(needs, need{c.path, []string{c.caps}})
		}
	}
	for _, n := range needs {
		full := n.full
		got, err := s.client.Sys().CapabilitiesSelfWithContext(ctx, full)
		if err != nil {
			var re *api.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
				return fmt.Errorf("vault: the token was refused: it is invalid or expired, or its policies do not allow sys/capabilities-self (Vault's default policy does): %w", cleanErr(err))
			}
			return fmt.Errorf("vault: checking the token's capabilities on %s: %w", full, cleanErr(err))
		}
		have := make(map[string]bool, len(got))
		for _, c := range got {
			have[c] = true
		}
		if have["root"] {
			continue
		}
		var missing []string
		for _, c := range n.caps {
			if !have[c] {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("vault: the token lacks %s on %s (it has: %s); its policy must grant %s",
				strings.Join(missing, ", "), full, strings.Join(got, ", "), strings.Join(n.caps, ", "))
		}
	}
	if s.sealer != nil {
		// A missing or non-derived key, found as the store is checked
		// rather than at the first connection.
		return s.sealer.checkKey(ctx)
	}
	return nil
}
