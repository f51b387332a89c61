package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Registration modes of a resource connector.
const (
	registrationDynamic  = "dynamic"
	registrationDocument = "metadata_document"
	registrationStatic   = "static"
)

// discoveryTTL is how long discovered metadata is used before it is
// fetched again.
const discoveryTTL = 24 * time.Hour

// failureTTL is how long a failed discovery is answered from memory, so
// that a misconfigured resource is not asked on every request.
const failureTTL = 15 * time.Second

// resourceClient gives a resource connector its OAuth client, found on
// first use: the resource's authorization server from its metadata, the
// client from the configuration, a registration shared through the store,
// or the proxy's own client ID metadata document. Nothing is fetched at
// provisioning.
type resourceClient struct {
	name, resource, registration string
	// base is the connector's settings that do not come from discovery:
	// scopes, redirect URI, static credentials, timeouts.
	base      connector.Config
	store     kv.Store
	http      *http.Client
	registrar *discovery.Registrar
	now       func() time.Time

	group singleflight.Group

	mu       sync.Mutex
	conn     *connector.Connector
	found    *discovery.Result
	client   string // the client_id conn uses
	until    time.Time
	failed   error
	failedAt time.Time
	// challenge is a resource_metadata URL a 401 named that differs from
	// the discovered one: the next use discovers again from it.
	challenge string
}

func newResourceClient(name, resource, registration string, base connector.Config, store kv.Store) *resourceClient {
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 15 * time.Second}
	b := make([]byte, 8)
	rand.Read(b)
	return &resourceClient{
		name: name, resource: resource, registration: registration, base: base, store: store, http: hc,
		registrar: &discovery.Registrar{Store: store, HTTP: hc, Holder: hex.EncodeToString(b)},
		now:       time.Now,
	}
}

// get returns the connector's client, discovering and registering it when
// it has none or its metadata is stale. One caller per process does the
// work; the others wait for it.
func (rc *resourceClient) get(ctx context.Context) (*connector.Connector, error) {
	rc.mu.Lock()
	now := rc.now()
	switch {
	case rc.conn != nil && now.Before(rc.until) && rc.challenge == "":
		conn := rc.conn
		rc.mu.Unlock()
		return conn, nil
	case rc.failed != nil && now.Sub(rc.failedAt) < failureTTL:
		err := rc.failed
		rc.mu.Unlock()
		return nil, err
	}
	rc.mu.Unlock()
	v, err, _ := rc.group.Do("", func() (any, error) {
		conn, err := rc.resolve(context.WithoutCancel(ctx))
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if err != nil {
			rc.failed, rc.failedAt = err, rc.now()
			return nil, err
		}
		rc.failed, rc.challenge = nil, ""
		return conn, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*connector.Connector), nil
}

// resolve reads (or fetches and stores) the discovered metadata, gets the
// client, and builds the connector.
func (rc *resourceClient) resolve(ctx context.Context) (*connector.Connector, error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	rc.mu.Lock()
	challenge := rc.challenge
	rc.mu.Unlock()
	found, err := rc.discovered(ctx, challenge)
	if err != nil {
		return nil, err
	}
	cfg := rc.base
	cfg.Name, cfg.Resource, cfg.PKCE = rc.name, rc.resource, true
	cfg.AuthURL, cfg.TokenURL, cfg.RevocationURL, cfg.Issuer = found.AuthURL, found.TokenURL, found.RevocationURL, found.Issuer
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = found.ScopesSupported
	}
	switch rc.registration {
	case registrationDynamic:
		if found.RegistrationURL == "" {
			return nil, fmt.Errorf("%w: the authorization server %s offers no dynamic client registration (registration_endpoint); register a client and use registration static", discovery.ErrFailed, found.Issuer)
		}
		client, err := rc.registrar.Client(ctx, rc.name, discovery.Registration{
			Endpoint: found.RegistrationURL, Issuer: found.Issuer, RedirectURI: cfg.RedirectURL,
			Name: "caddy-oauthconn " + rc.name, Scope: strings.Join(cfg.Scopes, " "), AuthMethods: found.AuthMethods,
		})
		if err != nil {
			return nil, err
		}
		cfg.ClientID, cfg.ClientSecret = client.ID, client.Secret
		cfg.AuthStyle = connector.AuthBasic
		if client.AuthMethod != "client_secret_basic" {
			// client_secret_post, or none: a public client sends its
			// client_id in the body and no secret.
			cfg.AuthStyle = connector.AuthPost
		}
	case registrationDocument:
		if !found.ClientIDMetadataDocumentSupported {
			return nil, fmt.Errorf("%w: the authorization server %s does not accept client ID metadata documents", discovery.ErrFailed, found.Issuer)
		}
		cfg.ClientSecret, cfg.AuthStyle = "", connector.AuthPost
	}
	conn, err := connector.New(cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", discovery.ErrFailed, err)
	}
	rc.mu.Lock()
	rc.conn, rc.found, rc.client = conn, found, cfg.ClientID
	rc.until = found.FetchedAt.Add(discoveryTTL)
	rc.mu.Unlock()
	return conn, nil
}

// discovered returns the resource's metadata from the store while it is
// fresh (and no 401 named other metadata), else discovers it and stores
// it. A refused discovery stores nothing.
func (rc *resourceClient) discovered(ctx context.Context, challenge string) (*discovery.Result, error) {
	path := "discovery/" + rc.name
	e, err := rc.store.Get(ctx, path)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return nil, fmt.Errorf("%w: reading discovered metadata: %w", discovery.ErrStore, err)
	}
	if found, ok := decodeResult(e.Data); ok && found.Resource == rc.resource &&
		rc.now().Sub(found.FetchedAt) < discoveryTTL && (challenge == "" || challenge == found.ResourceMetadataURL) {
		return found, nil
	}
	found, err := discovery.Discover(ctx, rc.http, rc.resource, challenge)
	if err != nil {
		return nil, err
	}
	if _, err := rc.store.Put(ctx, path, encodeResult(found), e.Version); err != nil && !errors.Is(err, kv.ErrConflict) {
		// Another replica storing it at once is as good; a store that
		// fails costs a fetch next time, not this request.
		return found, nil
	}
	return found, nil
}

// noticeChallenge records the resource_metadata URL of an upstream 401:
// if it is not the discovered one, the next use discovers again from it.
func (rc *resourceClient) noticeChallenge(metadataURL string) {
	if metadataURL == "" {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.found != nil && metadataURL != rc.found.ResourceMetadataURL {
		rc.challenge = metadataURL
	}
}

// clientRejected is told that the token endpoint refused the client: a
// dynamically registered client the server no longer knows is forgotten,
// so that the next use registers again.
func (rc *resourceClient) clientRejected(ctx context.Context) {
	if rc.registration != registrationDynamic {
		return
	}
	rc.mu.Lock()
	id := rc.client
	rc.conn, rc.client = nil, ""
	rc.mu.Unlock()
	if id != "" {
		rc.registrar.Forget(ctx, rc.name, id)
	}
}

func encodeResult(r *discovery.Result) map[string]string {
	return map[string]string{
		"resource": r.Resource, "resource_metadata": r.ResourceMetadataURL, "issuer": r.Issuer,
		"authorization_endpoint": r.AuthURL, "token_endpoint": r.TokenURL,
		"registration_endpoint": r.RegistrationURL, "revocation_endpoint": r.RevocationURL,
		"scopes_supported":                      strings.Join(r.ScopesSupported, " "),
		"token_endpoint_auth_methods_supported": strings.Join(r.AuthMethods, " "),
		"iss_parameter_supported":               strconv.FormatBool(r.ISSParameterSupported),
		"client_id_metadata_document_supported": strconv.FormatBool(r.ClientIDMetadataDocumentSupported),
		"fetched_at":                            r.FetchedAt.UTC().Format(time.RFC3339),
	}
}

func decodeResult(d map[string]string) (*discovery.Result, bool) {
	if d["token_endpoint"] == "" || d["authorization_endpoint"] == "" {
		return nil, false
	}
	at, err := time.Parse(time.RFC3339, d["fetched_at"])
	if err != nil {
		return nil, false
	}
	return &discovery.Result{
		Resource: d["resource"], ResourceMetadataURL: d["resource_metadata"], Issuer: d["issuer"],
		AuthURL: d["authorization_endpoint"], TokenURL: d["token_endpoint"],
		RegistrationURL: d["registration_endpoint"], RevocationURL: d["revocation_endpoint"],
		ScopesSupported:                   strings.Fields(d["scopes_supported"]),
		AuthMethods:                       strings.Fields(d["token_endpoint_auth_methods_supported"]),
		ISSParameterSupported:             d["iss_parameter_supported"] == "true",
		ClientIDMetadataDocumentSupported: d["client_id_metadata_document_supported"] == "true",
		FetchedAt:                         at,
	}, true
}

// checkResource refuses settings that discovery would contradict.
func (c *Connector) checkResource() error {
	if err := checkResourceURL(c.Resource); err != nil {
		return fmt.Errorf("connector %s: resource: %w", c.name, err)
	}
	for field, v := range map[string]string{"provider": c.Provider, "authorization_url": c.AuthorizationURL,
		"token_url": c.TokenURL, "issuer": c.Issuer, "revocation_url": c.RevocationURL} {
		if v != "" {
			return fmt.Errorf("connector %s: %s is discovered from the resource; remove it", c.name, field)
		}
	}
	switch c.Registration {
	case "":
		c.Registration = registrationDynamic
		if c.ClientID != "" {
			c.Registration = registrationStatic
		}
	case registrationDynamic, registrationDocument:
		if c.ClientID != "" || c.ClientSecret != "" {
			return fmt.Errorf("connector %s: client_id and client_secret come from registration %s; remove them", c.name, c.Registration)
		}
	case registrationStatic:
		if c.ClientID == "" {
			return fmt.Errorf("connector %s: registration static needs client_id", c.name)
		}
	default:
		return fmt.Errorf("connector %s: registration must be dynamic, metadata_document or static, got %q", c.name, c.Registration)
	}
	if c.PKCE != nil && !*c.PKCE {
		return fmt.Errorf("connector %s: a resource connector always uses PKCE", c.name)
	}
	return nil
}

// checkResourceURL requires an absolute https URL (http only on a loopback
// host), without query, fragment or user.
func checkResourceURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q must be an absolute https URL", raw)
	}
	if !connector.SecureOrLoopback(u) {
		return fmt.Errorf("%q must be https (plain http only on a loopback host)", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q must have no query, fragment or user", raw)
	}
	return nil
}

// provisionResource sets up a resource connector: nothing is fetched now.
func (c *Connector) provisionResource(cfg connector.Config, a *App, exp func(string) string) error {
	if cfg.RedirectURL == "" {
		return fmt.Errorf("connector %s: public_url (or the connector's redirect_uri) is required", c.name)
	}
	if c.Registration == registrationDocument {
		if a.PublicURL == "" {
			return fmt.Errorf("connector %s: registration metadata_document needs public_url: the client_id is a URL of it", c.name)
		}
		cfg.ClientID = a.PublicURL + a.BasePath + "/clients/" + url.PathEscape(c.name)
	}
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = connector.AuthBasic
	}
	c.res = newResourceClient(c.name, exp(c.Resource), c.Registration, cfg, a.store)
	return nil
}

// discoveryDetail is what may be shown of a discovery error: what did not
// match, never a secret (discovery handles no secrets but the registered
// client's, which its errors never quote).
func discoveryDetail(err error) string {
	if errors.Is(err, discovery.ErrFailed) || errors.Is(err, discovery.ErrRegistration) {
		return err.Error()
	}
	return "the resource or its authorization server could not be reached"
}

// discoveryStatus is the status of a failed discovery: 502 when a server
// answered with something that must be refused or could not be reached,
// 503 when the store could not be read or written.
func discoveryStatus(err error) (int, string) {
	if errors.Is(err, discovery.ErrFailed) || errors.Is(err, discovery.ErrRegistration) {
		return http.StatusBadGateway, "discovery_failed"
	}
	if errors.Is(err, discovery.ErrStore) {
		return http.StatusServiceUnavailable, "store_unavailable"
	}
	return http.StatusBadGateway, "discovery_failed"
}

// discoveryFailed answers an authorize request whose connector could not
// be resolved: the error page for a browser, JSON otherwise.
func (h *ConnectHandler) discoveryFailed(w http.ResponseWriter, r *http.Request, c *Connector, err error, page bool) {
	h.logger.Warn("discovering the connector's authorization server", zap.String("connector", c.name), zap.Error(err))
	status, code := discoveryStatus(err)
	if page {
		writeErrorPage(w, status, h.app.BasePath+"/", "The connector's authorization server could not be discovered.", discoveryDetail(err))
		return
	}
	writeJSON(w, status, apiError{Error: code, Connector: c.name, Message: discoveryDetail(err)})
}

// discoveryError answers a proxied request whose connector could not be
// resolved.
func (h *ProxyHandler) discoveryError(w http.ResponseWriter, err error) error {
	if errors.Is(err, errUnconfigured) {
		return writeUnavailable(w, time.Minute, apiError{Error: "connector_unconfigured", Connector: h.conn.name, Message: err.Error()})
	}
	h.logger.Warn("discovering the connector's authorization server", zap.String("connector", h.conn.name), zap.Error(err))
	status, code := discoveryStatus(err)
	w.Header().Set("Retry-After", strconv.Itoa(int(failureTTL.Seconds())))
	return writeJSON(w, status, apiError{Error: code, Connector: h.conn.name, Message: discoveryDetail(err)})
}

// adminClient is the connector's client for an admin operation.
func (a *App) adminClient(ctx context.Context, c *Connector) (*connector.Connector, error) {
	if c.unconfigured() {
		return nil, caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("connector %s is unconfigured", c.name)}
	}
	conn, err := c.client(ctx)
	if err != nil {
		status, _ := discoveryStatus(err)
		return nil, caddy.APIError{HTTPStatus: status, Err: fmt.Errorf("connector %s: %s", c.name, discoveryDetail(err))}
	}
	return conn, nil
}

// clientDocument serves a metadata_document connector's client ID metadata
// document: the authorization server fetches it from the client_id URL to
// learn the client's redirect URI and name.
func (h *ConnectHandler) clientDocument(w http.ResponseWriter, r *http.Request) {
	c := h.app.Connectors[r.PathValue("name")]
	if c == nil || c.res == nil || c.Registration != registrationDocument {
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown_client", Message: "no connector publishes a client ID metadata document here"})
		return
	}
	cfg := c.res.base
	writeJSON(w, http.StatusOK, map[string]any{
		"client_id":                  cfg.ClientID,
		"client_name":                "caddy-oauthconn " + c.name,
		"redirect_uris":              []string{cfg.RedirectURL},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	})
}
