package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Store is what registration needs of the record store: reads and
// check-and-set writes.
type Store interface {
	Get(ctx context.Context, path string) (kv.Entry, error)
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
}

// Client is a dynamically registered client (RFC 7591).
type Client struct {
	// ID and Secret are the client's credentials; Secret is empty for a
	// public client.
	ID, Secret string
	// AuthMethod is the token endpoint authentication method the server
	// registered (client_secret_basic, client_secret_post or none).
	AuthMethod string
	// Issuer and RedirectURI are what the client was registered with and
	// for; a change of either registers again.
	Issuer, RedirectURI string
	// RegistrationAccessToken and RegistrationURI manage the registration
	// (RFC 7592), if the server offers it.
	RegistrationAccessToken, RegistrationURI string
	// RegisteredAt is when the client was registered.
	RegisteredAt time.Time
}

// Registration says what to register.
type Registration struct {
	// Endpoint is the authorization server's registration endpoint.
	Endpoint string
	// Issuer is the authorization server's issuer.
	Issuer string
	// RedirectURI is the proxy's callback URL.
	RedirectURI string
	// Name is the client's human-readable name.
	Name string
	// Scope is the scope the client will ask for (space-separated).
	Scope string
	// AuthMethods are the server's token endpoint authentication methods;
	// client_secret_basic is asked for when the server offers it (or says
	// nothing), else client_secret_post, else none.
	AuthMethods []string
}

// Registrar registers each connector's client once across every replica
// sharing the store: the first to need it takes a short lease in the
// connector's client record (check-and-set), registers, and writes the
// credentials over the lease; the others wait for the record.
type Registrar struct {
	// Store keeps the client records.
	Store Store
	// HTTP makes the registration requests.
	HTTP *http.Client
	// Holder names this process in leases.
	Holder string
	// LeaseTTL bounds a registration; a lease older than it is taken
	// over. Zero: 30 seconds.
	LeaseTTL time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// ErrRegistration is wrapped by errors of the registration endpoint.
var ErrRegistration = errors.New("client registration refused")

// ErrStore is wrapped by errors of the record store: nothing was refused,
// the registration could not be read or kept.
var ErrStore = errors.New("store unavailable")

func clientPath(connector string) string { return "clients/" + connector }

// Client returns the connector's registered client, registering it first
// if no replica has, or if the stored one was registered with another
// server or redirect URI.
func (r *Registrar) Client(ctx context.Context, connector string, reg Registration) (Client, error) {
	path := clientPath(connector)
	for {
		e, err := r.Store.Get(ctx, path)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return Client{}, fmt.Errorf("%w: reading the registered client: %w", ErrStore, err)
		}
		if c, ok := decodeClient(e.Data); ok && c.Issuer == reg.Issuer && c.RedirectURI == reg.RedirectURI {
			return c, nil
		}
		if until, held := r.leased(e.Data); held {
			// Another replica is registering: wait for its record.
			wait := min(time.Until(until), 200*time.Millisecond+rand.N(200*time.Millisecond))
			select {
			case <-ctx.Done():
				return Client{}, fmt.Errorf("waiting for another replica's client registration: %w", ctx.Err())
			case <-time.After(wait):
			}
			continue
		}
		leaseVersion, err := r.Store.Put(ctx, path, r.lease(), e.Version)
		if errors.Is(err, kv.ErrConflict) {
			continue // another replica took it first
		}
		if err != nil {
			return Client{}, fmt.Errorf("%w: taking the registration lease: %w", ErrStore, err)
		}
		c, regErr := r.register(ctx, reg)
		if regErr != nil {
			// Give the lease back so that the next attempt need not wait.
			r.Store.Put(context.WithoutCancel(ctx), path, map[string]string{"state": "failed"}, leaseVersion)
			return Client{}, regErr
		}
		if _, err := r.Store.Put(context.WithoutCancel(ctx), path, encodeClient(c), leaseVersion); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				// Our lease was taken over after it lapsed; the record
				// written over it wins.
				continue
			}
			return Client{}, fmt.Errorf("%w: storing the registered client: %w", ErrStore, err)
		}
		return c, nil
	}
}

// Forget marks the client unknown when the authorization server no longer
// knows it, so that the next use registers again. Only the client named
// by id is forgotten: a replica that already registered a new one keeps
// it.
func (r *Registrar) Forget(ctx context.Context, connector, id string) error {
	path := clientPath(connector)
	e, err := r.Store.Get(ctx, path)
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c, ok := decodeClient(e.Data); !ok || c.ID != id {
		return nil
	}
	_, err = r.Store.Put(ctx, path, map[string]string{"state": "forgotten"}, e.Version)
	if errors.Is(err, kv.ErrConflict) {
		return nil
	}
	return err
}

func (r *Registrar) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Registrar) lease() map[string]string {
	ttl := r.LeaseTTL
	if ttl == 0 {
		ttl = 30 * time.Second
	}
	return map[string]string{"state": "registering", "holder": r.Holder,
		"until": strconv.FormatInt(r.now().Add(ttl).UnixMilli(), 10)}
}

// leased reports whether a live registration lease is in data.
func (r *Registrar) leased(data map[string]string) (time.Time, bool) {
	if data["state"] != "registering" {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(data["until"], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	until := time.UnixMilli(ms)
	return until, until.After(r.now())
}

func (r *Registrar) register(ctx context.Context, reg Registration) (Client, error) {
	method := "client_secret_basic"
	if len(reg.AuthMethods) > 0 && !slices.Contains(reg.AuthMethods, method) {
		switch {
		case slices.Contains(reg.AuthMethods, "client_secret_post"):
			method = "client_secret_post"
		case slices.Contains(reg.AuthMethods, "none"):
			method = "none"
		}
	}
	meta := map[string]any{
		"redirect_uris":              []string{reg.RedirectURI},
		"token_endpoint_auth_method": method,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"client_name":                reg.Name,
	}
	if reg.Scope != "" {
		meta["scope"] = reg.Scope
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := post(ctx, r.HTTP, reg.Endpoint, meta)
	if err != nil {
		return Client{}, fmt.Errorf("%w: %s: %w", ErrRegistration, reg.Endpoint, err)
	}
	c := Client{ID: resp.ClientID, Secret: resp.ClientSecret, AuthMethod: resp.AuthMethod,
		Issuer: reg.Issuer, RedirectURI: reg.RedirectURI, RegisteredAt: r.now(),
		RegistrationAccessToken: resp.RegistrationAccessToken, RegistrationURI: resp.RegistrationURI}
	if c.AuthMethod == "" {
		c.AuthMethod = method
	}
	return c, nil
}

// registered is what is kept of a registration response (RFC 7591
// section 3.2.1, RFC 7592 section 3).
type registered struct {
	ClientID                string `json:"client_id"`
	ClientSecret            string `json:"client_secret"`
	AuthMethod              string `json:"token_endpoint_auth_method"`
	RegistrationAccessToken string `json:"registration_access_token"`
	RegistrationURI         string `json:"registration_client_uri"`
}

// post sends a registration request. Its errors never quote the response,
// which may hold the issued secret.
func post(ctx context.Context, client *http.Client, endpoint string, meta map[string]any) (*registered, error) {
	body, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e struct {
			Code string `json:"error"`
		}
		json.Unmarshal(raw, &e)
		return nil, fmt.Errorf("answered %d %s", resp.StatusCode, errorCode(e.Code))
	}
	var out registered
	if err := json.Unmarshal(raw, &out); err != nil || out.ClientID == "" {
		return nil, errors.New("the answer holds no client_id")
	}
	return &out, nil
}

func encodeClient(c Client) map[string]string {
	return map[string]string{
		"state": "registered", "client_id": c.ID, "client_secret": c.Secret, "auth_method": c.AuthMethod,
		"issuer": c.Issuer, "redirect_uri": c.RedirectURI,
		"registration_access_token": c.RegistrationAccessToken, "registration_client_uri": c.RegistrationURI,
		"registered_at": c.RegisteredAt.UTC().Format(time.RFC3339),
	}
}

func decodeClient(d map[string]string) (Client, bool) {
	if d["state"] != "registered" || d["client_id"] == "" {
		return Client{}, false
	}
	at, _ := time.Parse(time.RFC3339, d["registered_at"])
	return Client{ID: d["client_id"], Secret: d["client_secret"], AuthMethod: d["auth_method"],
		Issuer: d["issuer"], RedirectURI: d["redirect_uri"],
		RegistrationAccessToken: d["registration_access_token"], RegistrationURI: d["registration_client_uri"],
		RegisteredAt: at}, true
}

// errorCode keeps an RFC 7591 error code only if it looks like one.
func errorCode(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return "(no error code)"
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '_' {
			return "(no error code)"
		}
	}
	return s
}
