package imitation

import (
	"net/http"
	"strings"
	"testing"
)

// NewHubSpot imitates HubSpot's OAuth endpoints, following
// https://developers.hubspot.com/docs/api/working-with-oauth and
// https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/guide:
// credentials in the form body; access tokens of 30 minutes; a refresh
// returns the same refresh token; errors name their kind in status
// (BAD_AUTH_CODE, BAD_REFRESH_TOKEN, BAD_CLIENT_ID) with a message, not
// RFC 6749's error; DELETE /oauth/v1/refresh-tokens/{token} deletes a
// refresh token, answering 204.
func NewHubSpot(t testing.TB) *Provider {
	return newProvider(t, "hubspot", spec{
		authPath: "/oauth/authorize", tokenPath: "/oauth/v1/token", revokePath: "/oauth/v1/refresh-tokens/",
		clientAuth: "post",
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, !refresh)
			if refresh {
				rt = p.refreshTokenOf(g)
			}
			return http.StatusOK, map[string]any{"access_token": at, "refresh_token": rt, "expires_in": 1800, "token_type": "bearer"}
		},
		fail: func(code string, refresh bool) (int, any) {
			kind := map[string]string{"invalid_client": "BAD_CLIENT_ID", "invalid_grant": "BAD_AUTH_CODE", "unsupported_grant_type": "BAD_GRANT_TYPE"}[code]
			if code == "invalid_grant" && refresh {
				kind = "BAD_REFRESH_TOKEN"
			}
			return http.StatusBadRequest, map[string]any{"status": kind, "message": "imitation: " + kind, "correlationId": "c0"}
		},
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			tok := strings.TrimPrefix(r.URL.Path, "/oauth/v1/refresh-tokens/")
			if r.Method != http.MethodDelete || !p.isRefreshToken(tok) {
				writeJSON(w, http.StatusNotFound, map[string]any{"status": "error", "message": "not found"})
				return
			}
			p.revokeToken(tok)
			w.WriteHeader(http.StatusNoContent)
		},
	})
}

func (p *Provider) refreshTokenOf(g *Grant) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.refresh {
		if v == g {
			return k
		}
	}
	return ""
}

func (p *Provider) isRefreshToken(tok string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.refresh[tok]
	return ok
}
