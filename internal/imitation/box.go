package imitation

import (
	"net/http"
	"testing"
)

// NewBox imitates Box's OAuth 2.0 endpoints, following
// https://developer.box.com/guides/authentication/oauth2/,
// https://developer.box.com/guides/authentication/tokens/refresh/ and
// https://developer.box.com/guides/authentication/tokens/revoke/:
// credentials in the form body; refresh tokens are single-use (each
// refresh returns a new one); revocation is a form post of client_id,
// client_secret and token to /oauth2/revoke.
func NewBox(t testing.TB) *Provider {
	return newProvider(t, "box", spec{
		authPath: "/api/oauth2/authorize", tokenPath: "/oauth2/token", revokePath: "/oauth2/revoke",
		clientAuth: "post", rotate: true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, true)
			return http.StatusOK, map[string]any{"access_token": at, "expires_in": 3600, "token_type": "bearer",
				"refresh_token": rt, "restricted_to": []any{}, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}
		},
		fail:   rfcError,
		revoke: revokeRFC7009,
	})
}
