package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
	"go.uber.org/zap"
)

// Auth says how the store logs in to Vault.
type Auth struct {
	// Method is "token" (default: the configured token or VAULT_TOKEN),
	// "token_file" (a file kept current by Vault Agent, re-read when it
	// changes), "approle" or "kubernetes".
	Method string
	// TokenFile holds the token for token_file.
	TokenFile string
	// RoleID and SecretID (or SecretIDFile) are AppRole's credentials;
	// with Wrapped, the secret ID is a response-wrapping token to unwrap.
	RoleID       string
	SecretID     string
	SecretIDFile string
	Wrapped      bool
	// Role is the Kubernetes auth role; ServiceAccountTokenFile the
	// service account token, re-read at each login (default: the
	// in-cluster path).
	Role                    string
	ServiceAccountTokenFile string
	// MountPath is the auth method's mount (default: approle, kubernetes).
	MountPath string
}

// Validate checks that the method has what it needs.
func (a Auth) Validate() error {
	switch a.Method {
	case "", "token":
	case "token_file":
		if a.TokenFile == "" {
			return errors.New("vault auth token_file: the token file path is required")
		}
	case "approle":
		if a.RoleID == "" || (a.SecretID == "" && a.SecretIDFile == "") {
			return errors.New("vault auth approle: role_id and secret_id or secret_id_file are required")
		}
	case "kubernetes":
		if a.Role == "" {
			return errors.New("vault auth kubernetes: role is required")
		}
	default:
		return fmt.Errorf("vault auth: unknown method %q (token, token_file, approle, kubernetes)", a.Method)
	}
	return nil
}

func (a Auth) loginMethod() (api.AuthMethod, error) {
	switch a.Method {
	case "approle":
		sid := &approle.SecretID{FromString: a.SecretID, FromFile: a.SecretIDFile}
		if a.SecretIDFile != "" {
			sid.FromString = ""
		}
		var opts []approle.LoginOption
		if a.MountPath != "" {
			opts = append(opts, approle.WithMountPath(a.MountPath))
		}
		if a.Wrapped {
			opts = append(opts, approle.WithWrappingToken())
		}
		return approle.NewAppRoleAuth(a.RoleID, sid, opts...)
	case "kubernetes":
		var opts []kubernetes.LoginOption
		if a.MountPath != "" {
			opts = append(opts, kubernetes.WithMountPath(a.MountPath))
		}
		if a.ServiceAccountTokenFile != "" {
			opts = append(opts, kubernetes.WithServiceAccountTokenPath(a.ServiceAccountTokenFile))
		}
		return kubernetes.NewKubernetesAuth(a.Role, opts...)
	}
	return nil, nil
}

// Start keeps the store's Vault token valid until ctx ends: it re-reads a
// token file when it changes, or logs in with AppRole or Kubernetes,
// renews the token with Vault's LifetimeWatcher, and logs in again when it
// reaches its maximum TTL or is revoked. It waits up to wait for the first
// login. Errors are logged without any credential. The store also logs to
// log what it cannot report through a call's error.
func (s *Store) Start(ctx context.Context, log *zap.Logger, wait time.Duration) error {
	if log == nil {
		log = zap.NewNop()
	}
	s.log.Store(log)
	switch s.auth.Method {
	case "", "token":
		return nil
	case "token_file":
		if err := s.readTokenFile(); err != nil {
			return err
		}
		go s.watchTokenFile(ctx, log)
		return nil
	}
	method, err := s.auth.loginMethod()
	if err != nil {
		return fmt.Errorf("vault auth %s: %w", s.auth.Method, err)
	}
	first := make(chan error, 1)
	go s.loginLoop(ctx, log, method, first)
	select {
	case err := <-first:
		if err != nil {
			log.Warn("vault login failed; retrying in the background", zap.String("method", s.auth.Method), zap.Error(err))
		}
	case <-time.After(wait):
		log.Warn("vault login is slow; continuing in the background", zap.String("method", s.auth.Method))
	}
	return nil
}

func (s *Store) readTokenFile() error {
	b, err := os.ReadFile(s.auth.TokenFile)
	if err != nil {
		return fmt.Errorf("vault auth token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return errors.New("vault auth token_file: the file is empty")
	}
	s.client.SetToken(tok)
	return nil
}

func (s *Store) watchTokenFile(ctx context.Context, log *zap.Logger) {
	var last time.Time
	if fi, err := os.Stat(s.auth.TokenFile); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(s.auth.TokenFile)
		if err != nil || fi.ModTime().Equal(last) {
			continue
		}
		last = fi.ModTime()
		if err := s.readTokenFile(); err != nil {
			log.Warn("re-reading the Vault token file", zap.Error(err))
			continue
		}
		log.Info("vault token file changed; using the new token")
	}
}

func (s *Store) loginLoop(ctx context.Context, log *zap.Logger, method api.AuthMethod, first chan<- error) {
	var once sync.Once
	report := func(err error) { once.Do(func() { first <- err }) }
	backoff := time.Second
	for ctx.Err() == nil {
		secret, err := s.client.Auth().Login(ctx, method)
		if err == nil && (secret == nil || secret.Auth == nil) {
			err = errors.New("login returned no token")
		}
		if err != nil {
			report(cleanErr(err))
			log.Warn("vault login failed", zap.String("method", s.auth.Method), zap.Error(cleanErr(err)))
			sleepCtx(ctx, backoff)
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		report(nil)
		log.Debug("logged in to vault", zap.String("method", s.auth.Method), zap.Int("ttl_seconds", secret.Auth.LeaseDuration))
		s.keepRenewed(ctx, log, secret)
	}
}

// keepRenewed renews the login token until it can no longer be renewed
// (maximum TTL, revoked), then returns so that the caller logs in again.
func (s *Store) keepRenewed(ctx context.Context, log *zap.Logger, secret *api.Secret) {
	if !secret.Auth.Renewable {
		// Log in again shortly before the token expires.
		sleepCtx(ctx, time.Duration(float64(secret.Auth.LeaseDuration)*0.8)*time.Second)
		return
	}
	w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		log.Warn("vault token renewal", zap.Error(err))
		sleepCtx(ctx, time.Second)
		return
	}
	go w.Start()
	defer w.Stop()
	full := time.Duration(secret.Auth.LeaseDuration) * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				log.Warn("vault token can no longer be renewed; logging in again", zap.Error(cleanErr(err)))
			}
			return
		case r := <-w.RenewCh():
			// A renewal shorter than the token's TTL was capped by its
			// maximum TTL: log in again at half of what is left,
			// rather than race the expiry.
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				if left := time.Duration(r.Secret.Auth.LeaseDuration) * time.Second; left < full {
					sleepCtx(ctx, left/2)
					return
				}
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
