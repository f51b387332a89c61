package imitation

import (
	"net/http"
	"testing"
)

// NewGoogle imitates Google's OAuth 2.0 endpoints for web server
// applications, following
// https://developers.google.com/identity/protocols/oauth2/web-server:
// a refresh token only when the authorization asked access_type=offline
// (and, in this imitation, prompt=consent, without which Google issues none
// on a later consent); refreshes return no new refresh token; revocation
// at /revoke takes the token in a form, without client authentication.
func NewGoogle(t testing.TB) *Provider {
	return newProvider(t, "google", spec{
		authPath: "/o/oauth2/v2/auth", tokenPath: "/token", revokePath: "/revoke",
		clientAuth: "either",
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			offline := g.Auth.Get("access_type") == "offline" && g.Auth.Get("prompt") == "consent"
			at, rt := p.issue(g, !refresh && offline)
			body := map[string]any{"access_token": at, "expires_in": 3599, "token_type": "Bearer", "scope": g.Scope}
			if rt != "" {
				body["refresh_token"] = rt
			}
			return http.StatusOK, body
		},
		fail: rfcError,
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			if r.Method != http.MethodPost || !p.revokeToken(req.Params["token"]) {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_token"})
				return
			}
			w.WriteHeader(http.StatusOK)
		},
	})
}
