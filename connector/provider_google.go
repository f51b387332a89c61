package connector

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// google is Google APIs, following "Using OAuth 2.0 for Web Server
// Applications", https://developers.google.com/identity/protocols/oauth2/web-server:
// a refresh token is issued only with access_type=offline, and again on a
// later consent only with prompt=consent. Refresh tokens unused for six
// months expire. Revocation posts the token to https://oauth2.googleapis.com/revoke
// without client authentication.
var _ = register(&Provider{
	Name:          "google",
	Doc:           "https://developers.google.com/identity/protocols/oauth2/web-server",
	AuthURL:       "https://accounts.google.com/o/oauth2/v2/auth",
	TokenURL:      "https://oauth2.googleapis.com/token",
	RevocationURL: "https://oauth2.googleapis.com/revoke",
	AuthStyle:     AuthPost,
	Scopes:        []string{"openid", "email"},
	AuthParams:    map[string]string{"access_type": "offline", "prompt": "consent"},
	APIBase:       "https://www.googleapis.com",
	KeepAlive:     30 * 24 * time.Hour,
	Revoke:        revokeGoogle,
})

// revokeGoogle posts the refresh token (which revokes the grant) or else
// the access token; Google answers 200 when it revoked it.
func revokeGoogle(ctx context.Context, c *Connector, t Tokens) (bool, error) {
	tok := t.Refresh
	if tok == "" {
		tok = t.Access
	}
	req, err := c.revocationRequest(ctx, http.MethodPost, c.cfg.RevocationURL, strings.NewReader(url.Values{"token": {tok}}.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.sendRevocation(req, http.StatusOK)
}
