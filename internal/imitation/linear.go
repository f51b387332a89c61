package imitation

import (
	"net/http"
	"strings"
	"testing"
)

// NewLinear imitates Linear's OAuth 2.0 endpoints, following
// https://linear.app/developers/oauth-2-0-authentication: comma-separated
// scopes; credentials in the form body; access tokens with expires_in and
// refresh tokens that rotate; the scope answered as an array; RFC 7009
// revocation at /oauth/revoke.
func NewLinear(t testing.TB) *Provider {
	return newProvider(t, "linear", spec{
		authPath: "/oauth/authorize", tokenPath: "/oauth/token", revokePath: "/oauth/revoke",
		clientAuth: "post", rotate: true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, true)
			return http.StatusOK, map[string]any{"access_token": at, "token_type": "Bearer", "refresh_token": rt,
				"expires_in": 86399, "scope": strings.Split(g.Scope, ",")}
		},
		fail:   rfcError,
		revoke: revokeRFC7009,
	})
}
