package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// Connector is one OAuth 2.0 client registration. String fields may hold
// placeholders such as {env.MS_CLIENT_SECRET}, expanded at provisioning. A
// connector whose client_id expands to empty is "unconfigured": it loads,
// and its routes answer 503 until it is set.
type Connector struct {
	// Provider selects a preset: atlassian, box, dropbox, github, google,
	// hubspot, linear, microsoft (Microsoft Entra ID / Graph), notion,
	// salesforce, slack or zoom (see the README's provider table). Empty:
	// a generic OAuth 2.0 provider, which needs authorization_url and
	// token_url.
	Provider string `json:"provider,omitempty"`

	// Domain is the salesforce preset's login host: login (the
	// default, login.salesforce.com), test (sandboxes,
	// test.salesforce.com) or the org's My Domain host name, such as
	// acme.my.salesforce.com.
	Domain string `json:"domain,omitempty"`

	// TokenKind is the token a slack connection keeps: user (the
	// default; the user token under authed_user, scopes asked as
	// user_scope) or bot (the bot token, scopes asked as scope).
	TokenKind string `json:"token_kind,omitempty"`

	// Tenant is the Microsoft Entra tenant (ID or domain) whose endpoints
	// the microsoft preset uses. Default: common.
	Tenant string `json:"tenant,omitempty"`

	// AuthorizationURL is the provider's authorization endpoint.
	AuthorizationURL string `json:"authorization_url,omitempty"`

	// TokenURL is the provider's token endpoint.
	TokenURL string `json:"token_url,omitempty"`

	// Issuer is the authorization server's issuer identifier (RFC 8414).
	// With it set, an iss parameter in the authorization response must
	// equal it, and a missing one is refused when the server's metadata
	// says it always sends one (RFC 9207, mix-up defence).
	Issuer string `json:"issuer,omitempty"`

	// Subject makes connections per user (or tenant): a template of Caddy
	// placeholders, such as {http.auth.user.id} or
	// {http.request.header.X-Tenant}/{http.request.header.X-User},
	// evaluated on the authorize request (the flow is bound to it) and on
	// every proxied request. It must come from an authentication layer you
	// trust. Empty: one connection shared by everybody.
	Subject string `json:"subject,omitempty"`

	// User is the placeholder that names the authenticated user on the
	// connect routes: the flow records it, only the same user may finish
	// it, and the connection keeps it as connected_by. With forward_auth
	// it is the header copied from the auth server, such as
	// {http.request.header.Remote-User}. Default: the app's user, else
	// {http.auth.user.id} (basic_auth and authentication modules).
	User string `json:"user,omitempty"`

	// RevocationURL is the provider's RFC 7009 token revocation endpoint,
	// called when a connection is disconnected. Presets set their
	// provider's, and revoke as it does where that is not RFC 7009
	// (github, slack, hubspot, dropbox, google); Microsoft Entra and
	// Atlassian have none (revoke access there instead).
	RevocationURL string `json:"revocation_url,omitempty"`

	// ClientID is the client identifier issued by the provider.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the client secret issued by the provider.
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes are requested at authorization. Presets default to what
	// their provider needs (microsoft:
	// https://graph.microsoft.com/.default offline_access; see the
	// README's provider table).
	Scopes []string `json:"scopes,omitempty"`

	// AuthStyle is how the client authenticates at the token endpoint:
	// "basic" (client_secret_basic), "post" (client_secret_post),
	// "private_key_jwt" (a JWT signed with ClientKey, RFC 7523) or
	// "client_assertion" (the JWT in ClientAssertionFile, for workload
	// identity federation). It is never auto-detected, so an
	// authorization code is never sent twice. Default: basic, or the
	// preset's (notion: always basic).
	AuthStyle string `json:"auth_style,omitempty"`

	// ClientKey is the private key that signs private_key_jwt assertions:
	// a PEM file, or a Vault Transit key (which needs the Vault store).
	ClientKey *ClientKey `json:"client_key,omitempty"`

	// ClientKeyID is the kid of private_key_jwt assertions. Default: the
	// key's RFC 7638 JWK thumbprint (SHA-256, base64url).
	ClientKeyID string `json:"client_key_id,omitempty"`

	// ClientCertFile is the PEM certificate of the client_key (a file or
	// a Vault Transit key); the assertion's header then carries its
	// x5t#S256 and x5t thumbprints (Microsoft Entra finds the key by
	// them). It must match the key, and is read again when it changes.
	ClientCertFile string `json:"client_cert_file,omitempty"`

	// AssertionAudience is the aud of private_key_jwt assertions.
	// Default: the token URL.
	AssertionAudience string `json:"assertion_audience,omitempty"`

	// ClientAssertionFile holds the client assertion of auth_style
	// client_assertion, such as a projected Kubernetes service account
	// token; it is read on every token request.
	ClientAssertionFile string `json:"client_assertion_file,omitempty"`

	// RedirectURI overrides the callback URL registered with the
	// provider. Default: {public_url}{base_path}/callback.
	RedirectURI string `json:"redirect_uri,omitempty"`

	// PKCE turns Proof Key for Code Exchange (S256) on or off. Default: on.
	PKCE *bool `json:"pkce,omitempty"`

	// RefreshMargin is how long before expiry a token is refreshed; for
	// short-lived tokens it is capped to a third of their lifetime.
	// Default: 5m.
	RefreshMargin caddy.Duration `json:"refresh_margin,omitempty"`

	// RefreshCooldown is the least time between the end of a refresh
	// triggered by an upstream 401 and the next one. Default: 30s.
	RefreshCooldown caddy.Duration `json:"refresh_cooldown,omitempty"`

	// MaxWait is the longest a proxied request waits for a store read or
	// a refresh; past it the request gets 503 token_unavailable with
	// Retry-After while the work goes on in the background. Default: 10s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// MaxConcurrentRefreshes bounds the refreshes of this connector's
	// connections (the token request and the store reads and writes
	// around it) that run at once in this process, so that a wave of
	// connections falling due together does not flood the provider's
	// token endpoint or the store; the others queue, the connection due
	// soonest first. Default: 16.
	MaxConcurrentRefreshes int `json:"max_concurrent_refreshes,omitempty"`

	// MaxWaiting bounds the proxied requests of this connector waiting
	// for a token (a refresh or a store read) at once in this process;
	// beyond it a request is answered at once with 503 overloaded and
	// Retry-After, while the refresh goes on. Default: 1000.
	MaxWaiting int `json:"max_waiting,omitempty"`

	// RevalidateInterval is how often a cached connection's record is
	// read again (off the request path, at most once per interval) so
	// that a disconnect, reconnect or import on another replica is
	// noticed. Negative: never. Default: 60s.
	RevalidateInterval caddy.Duration `json:"revalidate_interval,omitempty"`

	// KeepAlive refreshes connections that went this long without a
	// refresh, in the background, so that providers that expire idle
	// refresh tokens do not end them. Negative: never. Default: off, or
	// the preset's (720h for microsoft, google, github, atlassian and
	// zoom; 480h for box).
	KeepAlive caddy.Duration `json:"keepalive,omitempty"`

	// AuthorizationParams are extra query parameters of the authorization
	// URL (the notion preset sets owner=user).
	AuthorizationParams map[string]string `json:"authorization_params,omitempty"`

	// TokenHeaders are extra headers sent on token requests (the notion
	// preset sets Notion-Version).
	TokenHeaders map[string]string `json:"token_headers,omitempty"`

	// Resource makes this a connector to a self-describing protected
	// resource, such as a remote MCP server: its URL (https, or http on a
	// loopback host). Everything else is discovered on first use (the
	// resource's metadata, RFC 9728, names the authorization server, whose
	// metadata, RFC 8414 or OpenID Connect Discovery, names the
	// endpoints), and the resource indicator (RFC 8707) is sent on
	// authorization, code exchange and refresh. provider,
	// authorization_url, token_url, issuer and revocation_url are not
	// allowed with it. oauthconn_proxy may then omit its upstream.
	Resource string `json:"resource,omitempty"`

	// Registration is how a resource connector gets its client:
	// "dynamic" (RFC 7591 dynamic client registration, once for every
	// replica sharing the store), "metadata_document" (the client_id is
	// the URL of the client ID metadata document this proxy serves at
	// {public_url}{base_path}/clients/<connector>) or "static" (client_id
	// and client_secret given). Default: static with a client_id, else
	// dynamic.
	Registration string `json:"registration,omitempty"`

	// CAE turns Continuous Access Evaluation on or off for the microsoft
	// preset: on, the connector declares the cp1 client capability (the
	// claims parameter of authorization and token requests), and Graph
	// and SharePoint may revoke its tokens at once (a disabled user, a
	// changed password) and answer with claims challenges, which the
	// proxy hands to the app as 401 authorization_required. Only the
	// microsoft provider takes it. Default: on.
	CAE *bool `json:"cae,omitempty"`

	// Metadata names fields of the token response kept with the
	// connection (such as Salesforce's instance_url), available to
	// oauthconn_proxy as {oauthconn.metadata.<name>} and shown in the
	// status. Only string and number values are kept, at most 1024 bytes;
	// a refresh response that lacks a field keeps the earlier value.
	// Names of secrets (access_token, refresh_token, id_token, any name
	// ending in token, secret or password) are refused; any other value
	// that happens to be a secret is the operator's to leave out.
	Metadata []string `json:"metadata,omitempty"`

	// CallbackMetadata names parameters of the authorization response
	// (the callback's query, such as QuickBooks' realmId) kept with the
	// connection as metadata, on the same terms as Metadata.
	CallbackMetadata []string `json:"callback_metadata,omitempty"`

	// MetadataDiscovery is one GET request made with the new access token
	// right after a connection is authorized, whose JSON answer holds
	// metadata (such as Atlassian's cloud id). If it fails, the
	// connection is not stored and the person is asked to start again.
	MetadataDiscovery *MetadataDiscovery `json:"metadata_discovery,omitempty"`

	// AllowedHosts are the hosts an oauthconn_proxy upstream that depends
	// on metadata may resolve to: host names or IP literals with an
	// optional :port or :*, where a * label matches one or more labels
	// (*.my.salesforce.com). Without a port an entry matches the scheme's
	// default port only. Default: the preset's (salesforce:
	// *.my.salesforce.com; atlassian: api.atlassian.com), else none, and
	// an upstream that depends on metadata is then refused at load.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`

	// Grant is how the proxy gets its tokens: "authorization_code" (the
	// default: a person authorizes a connection once), "client_credentials"
	// (the application's own token, for no user: no authorization_url,
	// no subject, no connect routes), "on_behalf_of" (Microsoft Entra's
	// on-behalf-of flow) or "token_exchange" (RFC 8693). With the last
	// two the app sends its own user's access token as
	// "Authorization: Bearer …" and the proxy exchanges it for a token to
	// the upstream; the incoming token is never forwarded.
	Grant string `json:"grant,omitempty"`

	// Audience is RFC 8693's audience parameter of a token exchange: the
	// logical name of the upstream the token is for. Only with grant
	// token_exchange.
	Audience string `json:"audience,omitempty"`

	// ExchangeResource is RFC 8693's resource parameter of a token
	// exchange: the upstream's URI. Only with grant token_exchange (a
	// resource connector's resource is the resource option).
	ExchangeResource string `json:"exchange_resource,omitempty"`

	// RequestedTokenType is RFC 8693's requested_token_type. Only with
	// grant token_exchange. Default:
	// urn:ietf:params:oauth:token-type:access_token.
	RequestedTokenType string `json:"requested_token_type,omitempty"`

	// ExchangeCacheSize bounds how many exchanged tokens (on_behalf_of,
	// token_exchange) are kept in memory, one per incoming token, named
	// by its SHA-256; the least recently used goes first. Default: 10000.
	ExchangeCacheSize int `json:"exchange_cache_size,omitempty"`

	name      string
	conn      *connector.Connector // nil when unconfigured or a resource connector
	res       *resourceClient      // a resource connector's client, found on first use
	policy    tokens.Policy
	keepAlive time.Duration
	// allowed are AllowedHosts (or the preset's) parsed; metadata is
	// every metadata name the connector keeps.
	allowed   []connector.HostPattern
	metadata  map[string]bool
	grant     connector.Grant
	appToken  *tokens.AppToken  // client_credentials
	exchanges *tokens.Exchanges // on_behalf_of, token_exchange
}

// MetadataDiscovery is a request whose answer holds a connection's
// metadata.
type MetadataDiscovery struct {
	// URL is the request's https URL (http only for a loopback host).
	URL string `json:"url"`

	// Pick maps metadata names to JSON paths in the answer: object keys
	// and array indexes separated by dots, such as 0.id.
	Pick map[string]string `json:"pick"`
}

func (c *Connector) provision(name string, a *App, repl *caddy.Replacer) error {
	if err := kv.Segment(name); err != nil {
		return fmt.Errorf("connector name %q: %w", name, err)
	}
	c.name = name
	if c.Resource != "" {
		if err := c.checkResource(); err != nil {
			return err
		}
	}
	if c.ClientID == "" && c.Resource == "" {
		// Not a placeholder that expands to empty (that is
		// "unconfigured"), but no client_id at all.
		return fmt.Errorf("connector %s: client_id is required (use a placeholder such as {env.CLIENT_ID} to configure it later)", name)
	}
	exp := func(s string) string { return repl.ReplaceKnown(s, "") }
	cfg := connector.Config{
		Name:             name,
		Provider:         exp(c.Provider),
		Domain:           exp(c.Domain),
		TokenKind:        exp(c.TokenKind),
		AuthURL:          exp(c.AuthorizationURL),
		TokenURL:         exp(c.TokenURL),
		ClientID:         exp(c.ClientID),
		ClientSecret:     exp(c.ClientSecret),
		AuthStyle:        connector.AuthStyle(exp(c.AuthStyle)),
		RedirectURL:      exp(c.RedirectURI),
		PKCE:             c.PKCE == nil || *c.PKCE,
		Issuer:           exp(c.Issuer),
		RevocationURL:    exp(c.RevocationURL),
		AuthParams:       expandMap(c.AuthorizationParams, exp),
		TokenHeaders:     expandMap(c.TokenHeaders, exp),
		Metadata:         c.Metadata,
		AllowedHosts:     expandList(c.AllowedHosts, exp),
		CallbackMetadata: c.CallbackMetadata,
	}
	if d := c.MetadataDiscovery; d != nil {
		cfg.Discovery = &connector.Discovery{URL: exp(d.URL), Pick: d.Pick}
	}
	if err := c.clientAuth(&cfg, a, exp); err != nil {
		return err
	}
	for _, s := range c.Scopes {
		if s = exp(s); s != "" {
			cfg.Scopes = append(cfg.Scopes, s)
		}
	}
	if cfg.RedirectURL == "" && a.PublicURL != "" {
		cfg.RedirectURL = a.PublicURL + a.BasePath + "/callback"
	}
	if err := c.provisionGrant(&cfg, exp); err != nil {
		return err
	}
	if err := connector.Preset(&cfg, exp(c.Tenant)); err != nil {
		return err
	}
	if c.CAE != nil && cfg.Provider != "microsoft" {
		return fmt.Errorf("connector %s: cae applies to the microsoft provider only", name)
	}
	if c.CAE != nil && !*c.CAE {
		cfg.ClientCapabilities = nil
	}
	if err := c.provisionMetadata(&cfg); err != nil {
		return err
	}
	c.policy = tokens.Policy{Margin: time.Duration(c.RefreshMargin), Cooldown: time.Duration(c.RefreshCooldown),
		MaxWait: time.Duration(c.MaxWait), Revalidate: time.Duration(c.RevalidateInterval)}
	if c.MaxWait < 0 {
		return fmt.Errorf("connector %s: max_wait must not be negative", name)
	}
	if c.MaxConcurrentRefreshes < 0 || c.MaxWaiting < 0 {
		return fmt.Errorf("connector %s: max_concurrent_refreshes and max_waiting must not be negative", name)
	}
	c.policy.MaxConcurrentRefreshes, c.policy.MaxWaiting = c.MaxConcurrentRefreshes, c.MaxWaiting
	switch {
	case c.KeepAlive > 0:
		c.keepAlive = time.Duration(c.KeepAlive)
	case c.KeepAlive == 0:
		c.keepAlive = cfg.KeepAlive
	}
	if !c.authorizes() {
		c.keepAlive = 0 // no connection's refresh token to keep alive
	}
	if c.keepAlive > 0 && c.keepAlive < 4*time.Second {
		return fmt.Errorf("connector %s: keepalive must be at least 4s", name)
	}
	if c.policy.Margin == 0 {
		c.policy.Margin = 5 * time.Minute
	}
	if c.policy.Cooldown == 0 {
		c.policy.Cooldown = 30 * time.Second
	}
	if c.Resource != "" {
		return c.provisionResource(cfg, a, exp)
	}
	if cfg.ClientID == "" {
		return nil // unconfigured: reported at start, 503 on use
	}
	if cfg.RedirectURL == "" && c.authorizes() {
		return fmt.Errorf("connector %s: public_url (or the connector's redirect_uri) is required", name)
	}
	conn, err := connector.New(cfg, nil)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
}

// ClientKey is where a private_key_jwt signing key is: set one field.
type ClientKey struct {
	// File is a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC), read
	// again when it changes, so that a rotated key needs no restart.
	File string `json:"file,omitempty"`

	// VaultTransit is a Transit key that signs in Vault: the private key
	// never leaves it.
	VaultTransit *TransitKey `json:"vault_transit,omitempty"`
}

// TransitKey names a Vault Transit signing key (type rsa-2048, rsa-3072,
// rsa-4096 or ecdsa-p256). The store's token needs update on
// <mount>/sign/<key> and read on <mount>/keys/<key>.
type TransitKey struct {
	// Key is the Transit key's name.
	Key string `json:"key"`

	// Mount is where Transit is mounted. Default: transit.
	Mount string `json:"mount,omitempty"`
}

// clientAuth copies the client authentication settings into cfg; a Vault
// Transit key gets a signer on the store's Vault client (no request is
// made here).
func (c *Connector) clientAuth(cfg *connector.Config, a *App, exp func(string) string) error {
	cfg.ClientKeyID = exp(c.ClientKeyID)
	cfg.ClientCertFile = exp(c.ClientCertFile)
	cfg.AssertionAudience = exp(c.AssertionAudience)
	cfg.ClientAssertionFile = exp(c.ClientAssertionFile)
	k := c.ClientKey
	if k == nil {
		return nil
	}
	switch {
	case k.File != "" && k.VaultTransit != nil:
		return fmt.Errorf("connector %s: client_key takes a file or a vault_transit key, not both", c.name)
	case k.File != "":
		cfg.ClientKeyFile = exp(k.File)
	case k.VaultTransit != nil:
		vs, ok := a.rawStore.(*vault.Store)
		if !ok {
			return fmt.Errorf("connector %s: client_key vault_transit needs the Vault store (store vault { … }); the store is %s", c.name, a.rawStore.Location())
		}
		signer, err := vs.NewTransitSigner(exp(k.VaultTransit.Mount), exp(k.VaultTransit.Key))
		if err != nil {
			return fmt.Errorf("connector %s: client_key: %w", c.name, err)
		}
		cfg.ClientKeySigner = signer
	default:
		return fmt.Errorf("connector %s: client_key needs a file or a vault_transit key", c.name)
	}
	return nil
}

func expandList(l []string, exp func(string) string) []string {
	var out []string
	for _, s := range l {
		if s = exp(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func expandMap(m map[string]string, exp func(string) string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = exp(v)
	}
	return out
}

// unconfigured reports whether the connector cannot be used until its
// configuration is completed (a client_id that expands to empty).
func (c *Connector) unconfigured() bool { return c.conn == nil && c.res == nil }

// client returns the connector's OAuth client: the configured one, or a
// resource connector's, discovered on first use.
func (c *Connector) client(ctx context.Context) (*connector.Connector, error) {
	if c.res != nil {
		return c.res.get(ctx)
	}
	if c.conn == nil {
		return nil, errUnconfigured
	}
	return c.conn, nil
}

var errUnconfigured = errors.New("the connector has no client_id; configure it")

// Errors of subject evaluation; their text is safe to show.
var (
	errSubjectRequired = errors.New("this connector is per user, and the request does not say which user")
	errInvalidSubject  = errors.New("the request's subject cannot name a connection")
)

// subject evaluates the connector's subject template on r: empty for a
// shared connector.
func (c *Connector) subject(r *http.Request) (string, error) {
	if c.Subject == "" {
		return "", nil
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return "", errSubjectRequired
	}
	s := repl.ReplaceAll(c.Subject, "")
	if s == "" || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//") {
		return "", errSubjectRequired // a placeholder evaluated empty
	}
	if tokens.ValidSubject(s) != nil {
		return "", errInvalidSubject
	}
	return s, nil
}
