package imitation

import (
	"net/http"
	"testing"
)

// NewGitHub imitates GitHub's OAuth endpoints for a GitHub App with
// expiring user tokens, following
// https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app
// and https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens:
// tokens expire after 8 hours, refresh tokens (6 months,
// refresh_token_expires_in) rotate; errors come with HTTP 200
// (bad_verification_code, bad_refresh_token, incorrect_client_credentials,
// https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors);
// the app's grant is deleted with DELETE /applications/{client_id}/grant
// (https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization),
// HTTP Basic with the client's credentials and the access token in a JSON
// body, answering 204.
func NewGitHub(t testing.TB) *Provider {
	return newProvider(t, "github", spec{
		authPath: "/login/oauth/authorize", tokenPath: "/login/oauth/access_token", revokePath: "/applications/",
		clientAuth: "either",
		rotate:     true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, true)
			return http.StatusOK, map[string]any{"access_token": at, "expires_in": 28800, "refresh_token": rt,
				"refresh_token_expires_in": 15897600, "token_type": "bearer", "scope": ""}
		},
		fail: func(code string, refresh bool) (int, any) {
			gh := map[string]string{"invalid_client": "incorrect_client_credentials", "invalid_grant": "bad_verification_code"}[code]
			if code == "invalid_grant" && refresh {
				gh = "bad_refresh_token"
			}
			if gh == "" {
				gh = code
			}
			return http.StatusOK, map[string]any{"error": gh, "error_description": "imitation: " + gh}
		},
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			if r.Method != http.MethodDelete || r.URL.Path != "/applications/"+ClientID+"/grant" {
				http.NotFound(w, r)
				return
			}
			if req.BasicUser != ClientID || req.BasicPass != ClientSecret {
				writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "Bad credentials"})
				return
			}
			g, ok := p.Valid(req.Params["access_token"])
			if !ok {
				writeJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
				return
			}
			p.revokeGrant(g)
			w.WriteHeader(http.StatusNoContent)
		},
	})
}
