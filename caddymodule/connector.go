package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// Connector is one OAuth 2.0 client registration. String fields may hold
// placeholders such as {env.MS_CLIENT_SECRET}, expanded at provisioning. A
// connector whose client_id expands to empty is "unconfigured": it loads,
// and its routes answer 503 until it is set.
type Connector struct {
	// Provider selects a preset: "microsoft" (Microsoft Entra ID / Graph)
	// or "notion". Empty: a generic OAuth 2.0 provider, which needs
	// authorization_url and token_url.
	Provider string `json:"provider,omitempty"`

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
	// called when a connection is disconnected. The notion preset sets
	// https://api.notion.com/v1/oauth/revoke; Microsoft Entra has none
	// (revoke sessions in Entra instead).
	RevocationURL string `json:"revocation_url,omitempty"`

	// ClientID is the client identifier issued by the provider.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the client secret issued by the provider.
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes are requested at authorization. The microsoft preset
	// defaults to https://graph.microsoft.com/.default offline_access.
	Scopes []string `json:"scopes,omitempty"`

	// AuthStyle is how the client authenticates at the token endpoint:
	// "basic" (client_secret_basic) or "post" (client_secret_post). It is
	// never auto-detected, so an authorization code is never sent twice.
	// Default: basic; microsoft: post; notion: always basic.
	AuthStyle string `json:"auth_style,omitempty"`

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
	// refresh tokens do not end them. Negative: never. Default: off, and
	// 720h (30 days) for the microsoft preset.
	KeepAlive caddy.Duration `json:"keepalive,omitempty"`

	// AuthorizationParams are extra query parameters of the authorization
	// URL (the notion preset sets owner=user).
	AuthorizationParams map[string]string `json:"authorization_params,omitempty"`

	// TokenHeaders are extra headers sent on token requests (the notion
	// preset sets Notion-Version).
	TokenHeaders map[string]string `json:"token_headers,omitempty"`

	name      string
	conn      *connector.Connector // nil when unconfigured
	policy    tokens.Policy
	keepAlive time.Duration
}

func (c *Connector) provision(name string, a *App, repl *caddy.Replacer) error {
	if err := kv.Segment(name); err != nil {
		return fmt.Errorf("connector name %q: %w", name, err)
	}
	c.name = name
	if c.ClientID == "" {
		// Not a placeholder that expands to empty (that is
		// "unconfigured"), but no client_id at all.
		return fmt.Errorf("connector %s: client_id is required (use a placeholder such as {env.CLIENT_ID} to configure it later)", name)
	}
	exp := func(s string) string { return repl.ReplaceKnown(s, "") }
	cfg := connector.Config{
		Name:          name,
		Provider:      exp(c.Provider),
		AuthURL:       exp(c.AuthorizationURL),
		TokenURL:      exp(c.TokenURL),
		ClientID:      exp(c.ClientID),
		ClientSecret:  exp(c.ClientSecret),
		AuthStyle:     connector.AuthStyle(exp(c.AuthStyle)),
		RedirectURL:   exp(c.RedirectURI),
		PKCE:          c.PKCE == nil || *c.PKCE,
		Issuer:        exp(c.Issuer),
		RevocationURL: exp(c.RevocationURL),
		AuthParams:    expandMap(c.AuthorizationParams, exp),
		TokenHeaders:  expandMap(c.TokenHeaders, exp),
	}
	for _, s := range c.Scopes {
		if s = exp(s); s != "" {
			cfg.Scopes = append(cfg.Scopes, s)
		}
	}
	if cfg.RedirectURL == "" && a.PublicURL != "" {
		cfg.RedirectURL = a.PublicURL + a.BasePath + "/callback"
	}
	if err := connector.Preset(&cfg, exp(c.Tenant)); err != nil {
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
	if c.keepAlive > 0 && c.keepAlive < 4*time.Second {
		return fmt.Errorf("connector %s: keepalive must be at least 4s", name)
	}
	if c.policy.Margin == 0 {
		c.policy.Margin = 5 * time.Minute
	}
	if c.policy.Cooldown == 0 {
		c.policy.Cooldown = 30 * time.Second
	}
	if cfg.ClientID == "" {
		return nil // unconfigured: reported at start, 503 on use
	}
	if cfg.RedirectURL == "" {
		return fmt.Errorf("connector %s: public_url (or the connector's redirect_uri) is required", name)
	}
	conn, err := connector.New(cfg, nil)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
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
