package connector

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Grant is the OAuth 2.0 grant a connector obtains its tokens with.
type Grant string

const (
	// GrantAuthorizationCode (RFC 6749 4.1) is the default: a person
	// authorizes a connection once, and its refresh token keeps it.
	GrantAuthorizationCode Grant = "authorization_code"
	// GrantClientCredentials (RFC 6749 4.4) gets the application's own
	// token: no user, no authorization, no refresh token.
	GrantClientCredentials Grant = "client_credentials"
	// GrantOnBehalfOf is Microsoft Entra's on-behalf-of flow: the app's
	// user's access token is the assertion of a jwt-bearer grant with
	// requested_token_use=on_behalf_of.
	// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
	GrantOnBehalfOf Grant = "on_behalf_of"
	// GrantTokenExchange is RFC 8693 token exchange: the app's user's
	// access token is the subject_token.
	GrantTokenExchange Grant = "token_exchange"
)

// Grant types and token type identifiers sent on the wire.
const (
	// GrantTypeJWTBearer is RFC 7523's grant type, which Entra's
	// on-behalf-of flow uses.
	GrantTypeJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// GrantTypeTokenExchange is RFC 8693's grant type.
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	// TokenTypeAccessToken is RFC 8693's identifier of an OAuth 2.0
	// access token: the subject token's type, and the default requested
	// token type.
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// ParseGrant returns the grant named s; empty is the authorization code
// grant.
func ParseGrant(s string) (Grant, error) {
	switch g := Grant(s); g {
	case "":
		return GrantAuthorizationCode, nil
	case GrantAuthorizationCode, GrantClientCredentials, GrantOnBehalfOf, GrantTokenExchange:
		return g, nil
	}
	return "", fmt.Errorf("unknown grant %q (known: authorization_code, client_credentials, on_behalf_of, token_exchange)", s)
}

// Authorizes reports whether connections of the grant are authorized by a
// person in a browser (the authorization code grant): only those need an
// authorization URL, a redirect URI, PKCE and the connect routes.
func (g Grant) Authorizes() bool { return g == "" || g == GrantAuthorizationCode }

// Exchanges reports whether the grant exchanges a token the app sends
// (on-behalf-of, token exchange).
func (g Grant) Exchanges() bool { return g == GrantOnBehalfOf || g == GrantTokenExchange }

// ErrSubjectTokenRejected is wrapped by errors of OnBehalfOf and
// TokenExchange that mean the provider refused the token the app sent (RFC
// 8693 2.2.2 answers invalid_request for an invalid subject token; Entra's
// on-behalf-of answers invalid_grant, or interaction_required when the
// user must consent or satisfy a policy first): the app's user must get a
// new token, nothing the proxy can retry.
var ErrSubjectTokenRejected = errors.New("the provider refused the user's token")

// ClientCredentials gets the application's own token with the client
// credentials grant. It makes exactly one token request, authenticated as
// every other token request of the connector.
func (c *Connector) ClientCredentials(ctx context.Context) (*oauth2.Token, error) {
	tok, err := c.grantConfig(nil).Token(c.ctx(ctx))
	if err != nil {
		return nil, c.wrap("getting the application's token", err)
	}
	return tok, nil
}

// OnBehalfOf exchanges the app's user's access token for a token to the
// connector's scopes with Entra's on-behalf-of flow (a jwt-bearer grant
// with requested_token_use=on_behalf_of). It makes exactly one token
// request.
func (c *Connector) OnBehalfOf(ctx context.Context, assertion string) (*oauth2.Token, error) {
	if assertion == "" {
		return nil, fmt.Errorf("connector %s: on-behalf-of: %w: no user token", c.cfg.Name, ErrSubjectTokenRejected)
	}
	tok, err := c.grantConfig(url.Values{
		"grant_type":          {GrantTypeJWTBearer},
		"requested_token_use": {"on_behalf_of"},
		"assertion":           {assertion},
	}).Token(c.ctx(ctx))
	if err != nil {
		return nil, c.exchangeErr("exchanging the user's token on its behalf", err)
	}
	return tok, nil
}

// TokenExchange exchanges the app's user's access token for a token to the
// upstream with RFC 8693 token exchange, asking for the connector's
// requested token type, audience, resource and scopes. It makes exactly
// one token request.
func (c *Connector) TokenExchange(ctx context.Context, subjectToken string) (*oauth2.Token, error) {
	if subjectToken == "" {
		return nil, fmt.Errorf("connector %s: token exchange: %w: no subject token", c.cfg.Name, ErrSubjectTokenRejected)
	}
	params := url.Values{
		"grant_type":           {GrantTypeTokenExchange},
		"subject_token":        {subjectToken},
		"subject_token_type":   {TokenTypeAccessToken},
		"requested_token_type": {c.cfg.RequestedTokenType},
	}
	if params.Get("requested_token_type") == "" {
		params.Set("requested_token_type", TokenTypeAccessToken)
	}
	if c.cfg.Audience != "" {
		params.Set("audience", c.cfg.Audience)
	}
	if c.cfg.ExchangeResource != "" {
		params.Set("resource", c.cfg.ExchangeResource)
	}
	tok, err := c.grantConfig(params).Token(c.ctx(ctx))
	if err != nil {
		return nil, c.exchangeErr("exchanging the user's token", err)
	}
	return tok, nil
}

// grantConfig is x/oauth2's client credentials configuration with the
// connector's client authentication (style and secret) and scopes. params
// may override grant_type, which clientcredentials allows for grants of
// the same shape (a token request without a user or a redirect).
func (c *Connector) grantConfig(params url.Values) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID:       c.oauth.ClientID,
		ClientSecret:   c.oauth.ClientSecret,
		TokenURL:       c.oauth.Endpoint.TokenURL,
		Scopes:         c.oauth.Scopes,
		AuthStyle:      c.oauth.Endpoint.AuthStyle,
		EndpointParams: params,
	}
}

// exchangeErr classifies an error of an exchange: what says the user's
// token is refused also wraps ErrSubjectTokenRejected.
func (c *Connector) exchangeErr(op string, err error) error {
	werr := c.wrap(op, err)
	var pe *ProviderError
	if errors.As(werr, &pe) && pe.Status >= 400 && pe.Status < 500 && pe.Status != 429 && pe.Status != 408 {
		switch pe.Code {
		case "invalid_grant", "invalid_request", "interaction_required", "consent_required", "login_required":
			return fmt.Errorf("%w: %w", ErrSubjectTokenRejected, werr)
		}
	}
	return werr
}
