package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.cfg.AuthStyle == AuthBasic {
		req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return false, fmt.Errorf("connector %s: revoking: %s %s: %w", c.cfg.Name, ue.Op, redactURL(ue.URL), ue.Err)
		}
		return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		// RFC 7009 2.2: 200 whether or not the token was valid.
		return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, &ProviderError{Status: resp.StatusCode})
	}
	return true, nil
}
