// Package connector describes one OAuth 2.0 client registration ("a
// connector"): where the provider's endpoints are, how the client
// authenticates, which scopes it asks for. It builds authorization URLs,
// redeems authorization codes and refreshes tokens with golang.org/x/oauth2,
// and classifies the provider's errors.
package connector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// AuthStyle says how the client authenticates at the token endpoint. It is
// always explicit: auto-detection would retry a failed request the other way,
// which redeems an authorization code twice.
type AuthStyle string

const (
	// AuthBasic is client_secret_basic: HTTP Basic authentication.
	AuthBasic AuthStyle = "basic"
	// AuthPost is client_secret_post: credentials in the request body.
	AuthPost AuthStyle = "post"
)

// BodyFormat is how token requests are encoded.
type BodyFormat string

const (
	// BodyForm is RFC 6749's application/x-www-form-urlencoded body.
	BodyForm BodyFormat = "form"
	// BodyJSON is a JSON object body, as Notion expects.
	BodyJSON BodyFormat = "json"
)

// Config is a connector's settings, after presets are applied.
type Config struct {
	// Name identifies the connector in configuration, URLs and storage.
	Name string
	// Provider is the preset the settings came from (a name in the
	// registry, see Provider), or empty for a generic OAuth 2.0 provider.
	Provider string
	// AuthURL is the provider's authorization endpoint.
	AuthURL string
	// TokenURL is the provider's token endpoint.
	TokenURL string
	// ClientID and ClientSecret are the client's credentials.
	ClientID     string
	ClientSecret string
	// Scopes are requested at authorization.
	Scopes []string
	// AuthStyle is how the client authenticates at the token endpoint.
	AuthStyle AuthStyle
	// RedirectURL is the callback URL registered with the provider.
	RedirectURL string
	// PKCE turns on Proof Key for Code Exchange (S256).
	PKCE bool
	// AuthParams are extra query parameters of the authorization URL.
	AuthParams map[string]string
	// TokenHeaders are extra headers sent on token requests.
	TokenHeaders map[string]string
	// TokenBody is the encoding of token requests.
	TokenBody BodyFormat
	// RevocationURL is the provider's RFC 7009 revocation endpoint, if any.
	RevocationURL string
	// Issuer is the authorization server's issuer identifier; with it set,
	// authorization responses are checked against mix-up (RFC 9207).
	Issuer string
	// Resource is the protected resource the tokens are for (RFC 8707): it
	// is sent as the resource parameter on authorization, code exchange
	// and refresh. Empty: none is sent.
	Resource string
	// Timeout bounds each token request. Zero: 30 seconds.
	Timeout time.Duration
	// KeepAlive is how long a connection may go without a refresh before
	// it is refreshed only to keep its refresh token alive, for providers
	// that expire idle refresh tokens. Zero: never.
	KeepAlive time.Duration
	// ClientCapabilities are declared to the provider in the claims
	// parameter of authorization and token requests (Microsoft's "cp1":
	// the client handles claims challenges, so resources may apply
	// Continuous Access Evaluation to its tokens).
	ClientCapabilities []string

	// ClientKeyFile is the PEM private key that signs private_key_jwt
	// assertions; it is read again when it changes.
	ClientKeyFile string
	// ClientKeySigner signs private_key_jwt assertions with a key kept
	// elsewhere (Vault Transit), instead of ClientKeyFile.
	ClientKeySigner Signer
	// ClientKeyID is the assertion's kid. Empty: the key's RFC 7638
	// thumbprint.
	ClientKeyID string
	// ClientCertFile is the PEM certificate of the client key (file or
	// signer); its thumbprints go into the assertion's x5t#S256 and x5t
	// headers.
	ClientCertFile string
	// AssertionAudience is the assertion's aud. Empty: TokenURL.
	AssertionAudience string
	// ClientAssertionFile holds the assertion of auth style
	// client_assertion, read on every token request.
	ClientAssertionFile string

	// ScopeSeparator joins scopes in the authorization URL. Empty: a
	// space (RFC 6749 3.3); GitHub-style providers take a comma.
	ScopeSeparator string
	// ScopeParam is the authorization URL parameter that carries the
	// scopes. Empty: scope (Slack user tokens: user_scope).
	ScopeParam string
	// RepeatParams names authorization parameters (AuthParams) that the
	// token requests repeat, for providers that need them there too
	// (RFC 8707's resource).
	RepeatParams []string
	// DefaultLifetime is the access token lifetime assumed when a token
	// response has no expires_in. Zero: such a token has no expiry.
	DefaultLifetime time.Duration
	// RotatesRefreshTokens says the provider returns a new refresh token
	// on every refresh and invalidates the old one.
	RotatesRefreshTokens bool
	// Domain is the salesforce preset's login host: login (default),
	// test (sandboxes) or a My Domain host name.
	Domain string
	// TokenKind is the slack preset's token: user (default) or bot.
	TokenKind string

	// Metadata names token response fields kept as the connection's
	// metadata (see metadata.go).
	Metadata []string
	// CallbackMetadata names authorization response (callback query)
	// parameters kept as the connection's metadata.
	CallbackMetadata []string
	// Discovery is a request made after connecting whose answer holds
	// metadata, if any.
	Discovery *Discovery
	// AllowedHosts are the host patterns an upstream that depends on
	// metadata may resolve to (see HostPattern).
	AllowedHosts []string

	// Grant is how tokens are obtained (empty: the authorization code
	// grant). Only the authorization code grant needs AuthURL and
	// RedirectURL.
	Grant Grant
	// Audience and ExchangeResource are RFC 8693's audience and resource
	// parameters of a token exchange, if any.
	Audience, ExchangeResource string
	// RequestedTokenType is RFC 8693's requested_token_type of a token
	// exchange (empty: an access token).
	RequestedTokenType string
}

// Validate reports the first setting that makes the connector unusable.
func (c *Config) Validate() error {
	if c.ClientID == "" {
		return fmt.Errorf("connector %s: client_id is required", c.Name)
	}
	for field, v := range map[string]string{"authorization_url": c.AuthURL, "token_url": c.TokenURL, "redirect_uri": c.RedirectURL, "issuer": c.Issuer, "revocation_url": c.RevocationURL} {
		if v == "" && (field == "issuer" || field == "revocation_url") {
			continue
		}
		if v == "" && (field == "authorization_url" || field == "redirect_uri") && !c.Grant.Authorizes() {
			continue // no person authorizes: no browser is sent anywhere
		}
		if v == "" {
			return fmt.Errorf("connector %s: %s is required", c.Name, field)
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("connector %s: %s must be an absolute http(s) URL", c.Name, field)
		}
		if u.Fragment != "" {
			return fmt.Errorf("connector %s: %s must not have a fragment", c.Name, field)
		}
	}
	if err := c.validateClientAuth(); err != nil {
		return err
	}
	if _, err := ParseGrant(string(c.Grant)); err != nil {
		return fmt.Errorf("connector %s: %w", c.Name, err)
	}
	switch c.TokenBody {
	case "", BodyForm, BodyJSON:
	default:
		return fmt.Errorf("connector %s: unknown token body format %q", c.Name, c.TokenBody)
	}
	return c.ValidateMetadata()
}

// Connector is a usable connector: a validated Config and its HTTP client.
type Connector struct {
	cfg      Config
	provider *Provider // nil for a generic provider
	oauth    oauth2.Config
	client   *http.Client
	issuer   issuerState
	// base carries requests that are not token requests (discovery).
	base http.RoundTripper
}

// New validates cfg and makes a Connector. base is the HTTP client used for
// token requests (nil: http.DefaultTransport); it is wrapped, not modified.
func New(cfg Config, base http.RoundTripper) (*Connector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if base == nil {
		base = http.DefaultTransport
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	style := oauth2.AuthStyleInHeader
	if cfg.AuthStyle == AuthPost || cfg.AuthStyle.usesAssertion() {
		// The assertion styles send client_id in the body, and the
		// client authentication layer adds the assertion.
		style = oauth2.AuthStyleInParams
	}
	p := providers[cfg.Provider] // nil for a generic provider
	repeat := map[string]string{}
	for _, k := range cfg.RepeatParams {
		if v := cfg.AuthParams[k]; v != "" {
			repeat[k] = v
		}
	}
	if cfg.Resource != "" {
		// RFC 8707: the resource indicator goes on every token request,
		// which x/oauth2 cannot do for a refresh.
		repeat["resource"] = cfg.Resource
	}
	rt := base
	if p != nil || len(cfg.TokenHeaders) > 0 || cfg.TokenBody == BodyJSON || len(repeat) > 0 {
		tt := &tokenTransport{base: base, headers: cfg.TokenHeaders, json: cfg.TokenBody == BodyJSON, repeat: repeat}
		if p != nil {
			tt.tokenURL = cfg.TokenURL
			tt.hook = p.Response
			tt.cfg = cfg
		}
		rt = tt
	}
	if ca, err := newClientAuth(cfg, rt); err != nil {
		return nil, err
	} else if ca != nil {
		rt = ca
	}
	c := &Connector{
		cfg:      cfg,
		provider: p,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     oauth2.Endpoint{AuthURL: cfg.AuthURL, TokenURL: cfg.TokenURL, AuthStyle: style},
			RedirectURL:  cfg.RedirectURL,
			Scopes:       cfg.Scopes,
		},
		client: &http.Client{Transport: rt, Timeout: cfg.Timeout},
		base:   base,
	}
	if (cfg.ScopeSeparator != "" && cfg.ScopeSeparator != " ") || (cfg.ScopeParam != "" && cfg.ScopeParam != "scope") {
		// x/oauth2 joins scopes with spaces into scope: the
		// authorization URL gets them from AuthCodeURL instead.
		c.oauth.Scopes = nil
	}
	return c, nil
}

// Name returns the connector's name.
func (c *Connector) Name() string { return c.cfg.Name }

// Config returns a copy of the connector's settings.
func (c *Connector) Config() Config { return c.cfg }

// AuthCodeURL returns the URL that sends a browser to the provider to
// authorize, carrying state and, with PKCE on, the S256 challenge of
// verifier.
func (c *Connector) AuthCodeURL(state, verifier string) string {
	return c.authCodeURL(state, verifier, nil, nil)
}

// Exchange redeems an authorization code, sending the PKCE verifier when
// PKCE is on. It makes exactly one token request.
func (c *Connector) Exchange(ctx context.Context, code, verifier string) (*oauth2.Token, error) {
	var opts []oauth2.AuthCodeOption
	if c.cfg.PKCE {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	if claims := c.claims(nil); claims != "" {
		opts = append(opts, oauth2.SetAuthURLParam("claims", claims))
	}
	tok, err := c.oauth.Exchange(c.ctx(ctx), code, opts...)
	if err != nil {
		return nil, c.wrap("exchanging authorization code", err)
	}
	return tok, nil
}

// Refresh redeems a refresh token for a new token. It makes exactly one
// token request.
func (c *Connector) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	if refreshToken == "" {
		return nil, fmt.Errorf("connector %s: refreshing: %w: no refresh token", c.cfg.Name, ErrGrantRejected)
	}
	var tok *oauth2.Token
	var err error
	if len(c.cfg.ClientCapabilities) > 0 {
		// x/oauth2's refresh cannot send the claims parameter.
		tok, err = c.refreshWith(ctx, refreshToken, nil)
	} else {
		tok, err = c.oauth.TokenSource(c.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}).Token()
	}
	if err != nil {
		return nil, c.wrap("refreshing", err)
	}
	return tok, nil
}

func (c *Connector) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.client)
}

// ErrGrantRejected is wrapped by errors that mean the provider no longer
// honours the grant (RFC 6749 invalid_grant): the connection must be
// authorized again.
var ErrGrantRejected = errors.New("grant rejected")

// ErrClientRejected is wrapped by errors that mean the provider refuses the
// client itself (RFC 6749 invalid_client, unauthorized_client,
// unsupported_grant_type, or a 401 from the token endpoint): a problem of
// the connector's configuration (a wrong or expired client secret), not of
// any one connection, which fixing the configuration cures.
var ErrClientRejected = errors.New("client rejected")

// ProviderError is a token endpoint's error, reduced to what is safe to log:
// the HTTP status and RFC 6749's error code. The error description and the
// response body are left out, as providers may echo request values in them.
type ProviderError struct {
	// Status is the HTTP status code (0 if the response carried none).
	Status int
	// Code is RFC 6749's error code, if it was a well-formed one.
	Code string
	// RetryAfter is the wait the provider asked for with Retry-After
	// (RFC 9110 10.2.3), zero if it asked for none.
	RetryAfter time.Duration
}

func (e *ProviderError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("token endpoint answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("token endpoint answered %d", e.Status)
}

// Class says what an error of the token endpoint means for a connection.
type Class int

const (
	// Transient errors (5xx, 429, time-outs, network errors, anything not
	// known to be permanent) may pass: try again later.
	Transient Class = iota
	// GrantRejected means the grant is gone (invalid_grant).
	GrantRejected
	// ClientRejected means the client's configuration is refused.
	ClientRejected
)

// Classify returns the class of an error answered by the token endpoint.
// Only a 4xx answer can be permanent: a 5xx is the server's trouble,
// whatever its body says.
func (e *ProviderError) Classify() Class {
	if e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout {
		return Transient
	}
	switch e.Code {
	case "invalid_grant":
		return GrantRejected
	case "invalid_client", "unauthorized_client", "unsupported_grant_type":
		return ClientRejected
	}
	if e.Status == http.StatusUnauthorized {
		// RFC 6749 5.2: a 401 from the token endpoint is the client
		// failing to authenticate, whatever the body says.
		return ClientRejected
	}
	return Transient
}

// Permanent reports whether the error will not pass by itself.
func (e *ProviderError) Permanent() bool { return e.Classify() != Transient }

// ClassOf returns the class of any error returned by Exchange or Refresh.
func ClassOf(err error) Class {
	switch {
	case errors.Is(err, ErrGrantRejected):
		return GrantRejected
	case errors.Is(err, ErrClientRejected):
		return ClientRejected
	}
	return Transient
}

// RetryAfterOf returns the wait the token endpoint asked for, if err
// carries one.
func RetryAfterOf(err error) time.Duration {
	var pe *ProviderError
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (c *Connector) wrap(op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		pe := &ProviderError{Code: errorCode(re.ErrorCode)}
		if re.Response != nil {
			pe.Status = re.Response.StatusCode
			pe.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		}
		if assertionRefused(c.cfg.AuthStyle, pe) {
			return fmt.Errorf("connector %s: %s: %w: %w", c.cfg.Name, op, ErrClientRejected, pe)
		}
		switch pe.Classify() {
		case GrantRejected:
			return fmt.Errorf("connector %s: %s: %w: %w", c.cfg.Name, op, ErrGrantRejected, pe)
		case ClientRejected:
			return fmt.Errorf("connector %s: %s: %w: %w", c.cfg.Name, op, ErrClientRejected, pe)
		}
		return fmt.Errorf("connector %s: %s: %w", c.cfg.Name, op, pe)
	}
	var ae *assertionError
	if errors.As(err, &ae) {
		// The client could not authenticate itself (a key file gone, a
		// signer refusing): no request reached the provider.
		if ae.permanent {
			return fmt.Errorf("connector %s: %s: %w: %w", c.cfg.Name, op, ErrClientRejected, ae)
		}
		return fmt.Errorf("connector %s: %s: %w", c.cfg.Name, op, ae)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error repeats the token URL, which is configuration, not a
		// secret; keep the cause.
		return fmt.Errorf("connector %s: %s: %s %s: %w", c.cfg.Name, op, ue.Op, redactURL(ue.URL), ue.Err)
	}
	if strings.HasPrefix(err.Error(), "oauth2: ") {
		// x/oauth2's own errors (missing access_token, malformed JSON)
		// do not carry the response.
		return fmt.Errorf("connector %s: %s: %w", c.cfg.Name, op, err)
	}
	return fmt.Errorf("connector %s: %s: %w", c.cfg.Name, op, err)
}

// errorCode keeps an RFC 6749 error code only if it looks like one, so that
// nothing else a provider sends ends up in logs.
func errorCode(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '_' && (r < '0' || r > '9') && (r < 'A' || r > 'Z') {
			return ""
		}
	}
	return s
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(token URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}
