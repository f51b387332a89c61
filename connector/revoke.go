package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Tokens are a connection's tokens, as a Revoker needs them: some
// providers revoke the grant with the refresh token, others only with the
// access token.
type Tokens struct {
	Access, Refresh string
	// Expiry is the access token's expiry (zero if unknown).
	Expiry time.Time
}

// liveAccess returns an access token the provider still takes, for
// revocations authenticated by one (GitHub, Slack, Dropbox): t's, or, when
// that has expired, a new one from a refresh (whose rotated refresh token
// is of no use: the grant is being revoked).
func (c *Connector) liveAccess(ctx context.Context, t Tokens) string {
	if t.Refresh == "" || t.Expiry.IsZero() || time.Now().Before(t.Expiry) {
		return t.Access
	}
	tok, err := c.Refresh(ctx, t.Refresh)
	if err != nil {
		return t.Access // the provider will say what it makes of it
	}
	return tok.AccessToken
}

// Revoker revokes a connection's grant at a provider whose revocation is
// not RFC 7009. It reports true only when the provider confirmed; errors
// wrap a *ProviderError when the provider answered otherwise, and never
// carry a token.
type Revoker func(ctx context.Context, c *Connector, t Tokens) (bool, error)

// RevokeGrant revokes the connection's grant at the provider, with the
// preset's own revocation where it has one and RFC 7009 otherwise (the
// refresh token, which revokes the grant, or else the access token). It
// reports false, without error, when the connector has no revocation
// endpoint or there is no token to revoke.
func (c *Connector) RevokeGrant(ctx context.Context, t Tokens) (bool, error) {
	if c.cfg.RevocationURL == "" || (t.Access == "" && t.Refresh == "") {
		return false, nil
	}
	if c.provider != nil && c.provider.Revoke != nil {
		return c.provider.Revoke(ctx, c, t)
	}
	if t.Refresh != "" {
		return c.Revoke(ctx, t.Refresh, "refresh_token")
	}
	return c.Revoke(ctx, t.Access, "access_token")
}

// Revoke asks the provider to revoke a token (RFC 7009) at the connector's
// revocation URL, authenticating as at the token endpoint. Revoking a
// refresh token revokes the grant. Without a revocation URL it does
// nothing and reports false.
func (c *Connector) Revoke(ctx context.Context, token, hint string) (bool, error) {
	if c.cfg.RevocationURL == "" || token == "" {
		return false, nil
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	if c.cfg.AuthStyle == AuthPost {
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_secret", c.cfg.ClientSecret)
	}
	req, err := c.revocationRequest(ctx, http.MethodPost, c.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.cfg.AuthStyle == AuthBasic {
		req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	}
	// RFC 7009 2.2: 200 whether or not the token was valid.
	return c.sendRevocation(req, http.StatusOK)
}

// bearerRevocation is a POST to the revocation URL authenticated with the
// connection's access token (refreshed first if it has expired), for
// providers whose revocation takes no other credential; nil when there is
// no access token to send.
func (c *Connector) bearerRevocation(ctx context.Context, t Tokens) (*http.Request, error) {
	access := c.liveAccess(ctx, t)
	if access == "" {
		return nil, nil
	}
	req, err := c.revocationRequest(ctx, http.MethodPost, c.cfg.RevocationURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+access)
	return req, nil
}

// revocationRequest makes a request to a revocation endpoint; its errors
// name the configured revocation URL, never target, which may carry a
// token (HubSpot's has it in the path).
func (c *Connector) revocationRequest(ctx context.Context, method, target string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("connector %s: revoking at %s: malformed request", c.cfg.Name, redactURL(c.cfg.RevocationURL))
	}
	return req, nil
}

// sendRevocation sends req and reports whether the provider answered with
// one of the statuses that confirm the revocation.
func (c *Connector) sendRevocation(req *http.Request, ok ...int) (bool, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return false, fmt.Errorf("connector %s: revoking: %s %s: %w", c.cfg.Name, ue.Op, redactURL(c.cfg.RevocationURL), ue.Err)
		}
		return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	for _, s := range ok {
		if resp.StatusCode == s {
			return true, nil
		}
	}
	return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, &ProviderError{Status: resp.StatusCode})
}

// unwrapURLError drops url.Error's URL, which may carry a token, keeping
// the cause.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
