package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// RefreshScoped redeems a refresh token for an access token to scopes, which
// may name another resource than the connection's own (Microsoft Entra's
// refresh tokens are multi-resource: a token for
// https://contoso.sharepoint.com/.default is obtained with the refresh token
// of a Graph grant). It makes exactly one token request. If the connector
// asked for offline_access at authorization, so does this request, so that
// the provider keeps issuing refresh tokens. A response may carry a new
// refresh token (rotation), which the caller must keep.
//
// x/oauth2's refresh request has no scope parameter, so this request goes
// through its client credentials token source with grant_type replaced:
// the same client authentication, HTTP client (and so the same transport
// adaptations) and response parsing as every other token request.
func (c *Connector) RefreshScoped(ctx context.Context, refreshToken string, scopes []string) (*oauth2.Token, error) {
	if refreshToken == "" {
		return nil, fmt.Errorf("connector %s: refreshing: %w: no refresh token", c.cfg.Name, ErrGrantRejected)
	}
	if len(scopes) > 0 && slices.Contains(c.cfg.Scopes, "offline_access") && !slices.Contains(scopes, "offline_access") {
		scopes = append(slices.Clip(scopes), "offline_access")
	}
	tok, err := c.refreshWith(ctx, refreshToken, scopes)
	if err != nil {
		return nil, c.wrap("refreshing for "+strings.Join(scopes, " "), err)
	}
	return tok, nil
}

// refreshWith makes a refresh_token grant request with scopes (none: the
// grant's own) and, when the connector declares client capabilities, the
// claims parameter that declares them.
func (c *Connector) refreshWith(ctx context.Context, refreshToken string, scopes []string) (*oauth2.Token, error) {
	params := map[string][]string{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
	}
	if claims := c.claims(nil); claims != "" {
		params["claims"] = []string{claims}
	}
	cc := clientcredentials.Config{
		ClientID:       c.oauth.ClientID,
		ClientSecret:   c.oauth.ClientSecret,
		TokenURL:       c.oauth.Endpoint.TokenURL,
		AuthStyle:      c.oauth.Endpoint.AuthStyle,
		Scopes:         scopes,
		EndpointParams: params,
	}
	tok, err := cc.Token(c.ctx(ctx))
	if err != nil {
		return nil, err
	}
	if tok.AccessToken == "" {
		return nil, errors.New("oauth2: server response missing access_token")
	}
	return tok, nil
}

// claimsParam is Microsoft's claims request parameter, OIDC Core 5.5.
type claimsParam map[string]map[string]json.RawMessage

// claims returns the claims request parameter to send: challenge (the
// decoded claims of a resource's claims challenge, if any) with the
// connector's client capabilities added to its access_token member as
// xms_cc, as Microsoft documents for CAE-capable clients
// (https://learn.microsoft.com/entra/identity-platform/claims-challenge).
// Empty when there is neither.
func (c *Connector) claims(challenge claimsParam) string {
	if len(c.cfg.ClientCapabilities) == 0 && len(challenge) == 0 {
		return ""
	}
	out := claimsParam{}
	for k, v := range challenge {
		out[k] = maps.Clone(v)
	}
	if len(c.cfg.ClientCapabilities) > 0 {
		if out["access_token"] == nil {
			out["access_token"] = map[string]json.RawMessage{}
		}
		cc, _ := json.Marshal(map[string][]string{"values": c.cfg.ClientCapabilities})
		out["access_token"]["xms_cc"] = cc
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// ParseClaims checks that raw is a claims request (a JSON object of JSON
// objects, such as {"access_token":{"nbf":{"essential":true,"value":"1"}}})
// and returns it compact, for AuthCodeURLWithClaims.
func ParseClaims(raw []byte) (string, error) {
	var p claimsParam
	if err := json.Unmarshal(raw, &p); err != nil || p == nil {
		return "", errors.New("claims are not a JSON object of claims requests")
	}
	b, _ := json.Marshal(p)
	return string(b), nil
}

// AuthCodeURLFor is AuthCodeURL for a person who must satisfy a resource's
// challenge: the authorization request carries claims (from ParseClaims)
// merged with the connector's client capabilities, and asks for scopes
// besides the connector's own (step-up, RFC 6750 insufficient_scope).
func (c *Connector) AuthCodeURLFor(state, verifier, claims string, scopes []string) string {
	var p claimsParam
	if claims != "" {
		json.Unmarshal([]byte(claims), &p)
	}
	return c.authCodeURL(state, verifier, p, scopes)
}

func (c *Connector) authCodeURL(state, verifier string, challenge claimsParam, scopes []string) string {
	opts := []oauth2.AuthCodeOption{}
	if c.cfg.PKCE {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	for k, v := range c.cfg.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	if claims := c.claims(challenge); claims != "" {
		opts = append(opts, oauth2.SetAuthURLParam("claims", claims))
	}
	if c.cfg.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", c.cfg.Resource))
	}
	if len(scopes) > 0 {
		all := slices.Clone(c.oauth.Scopes)
		for _, s := range scopes {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(all, " ")))
	}
	return c.oauth.AuthCodeURL(state, opts...)
}
