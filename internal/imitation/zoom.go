package imitation

import (
	"net/http"
	"testing"
)

// NewZoom imitates Zoom's OAuth endpoints, following
// https://developers.zoom.us/docs/integrations/oauth/: HTTP Basic client
// authentication; access tokens of one hour; each refresh returns a new
// refresh token and invalidates the old; /oauth/revoke takes the token in
// a form with HTTP Basic client authentication.
func NewZoom(t testing.TB) *Provider {
	return newProvider(t, "zoom", spec{
		authPath: "/oauth/authorize", tokenPath: "/oauth/token", revokePath: "/oauth/revoke",
		clientAuth: "basic", rotate: true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, true)
			return http.StatusOK, map[string]any{"access_token": at, "token_type": "bearer", "refresh_token": rt,
				"expires_in": 3599, "scope": g.Scope}
		},
		fail:   rfcError,
		revoke: revokeRFC7009,
	})
}
