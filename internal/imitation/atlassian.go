package imitation

import (
	"net/http"
	"strings"
	"testing"
)

// NewAtlassian imitates Atlassian's OAuth 2.0 (3LO) endpoints, following
// https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/:
// the authorization must carry audience=api.atlassian.com and
// prompt=consent; token requests are JSON with the client's credentials
// in the body; a refresh token only with the offline_access scope, and
// refresh tokens rotate. There is no revocation endpoint.
func NewAtlassian(t testing.TB) *Provider {
	return newProvider(t, "atlassian", spec{
		authPath: "/authorize", tokenPath: "/oauth/token",
		clientAuth: "post", json: true, rotate: true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			if g.Auth.Get("audience") != "api.atlassian.com" || g.Auth.Get("prompt") != "consent" {
				return rfcError("invalid_grant", refresh)
			}
			offline := strings.Contains(" "+g.Scope+" ", " offline_access ")
			at, rt := p.issue(g, offline)
			body := map[string]any{"access_token": at, "expires_in": 3600, "token_type": "Bearer", "scope": g.Scope}
			if rt != "" {
				body["refresh_token"] = rt
			}
			return http.StatusOK, body
		},
		fail: rfcError,
	})
}
