package imitation

import (
	"net/http"
	"testing"
)

// NewNotion imitates Notion's OAuth endpoints for public connections,
// following https://developers.notion.com/docs/authorization and
// https://developers.notion.com/reference/refresh-a-token: HTTP Basic
// client authentication, JSON token requests with a Notion-Version header,
// answers without expires_in, and refresh tokens that rotate (each refresh
// returns a new access and a new refresh token); /v1/oauth/revoke takes
// the token in a JSON body.
func NewNotion(t testing.TB) *Provider {
	return newProvider(t, "notion", spec{
		authPath: "/v1/oauth/authorize", tokenPath: "/v1/oauth/token", revokePath: "/v1/oauth/revoke",
		clientAuth: "basic", json: true, header: "Notion-Version", rotate: true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, true)
			return http.StatusOK, map[string]any{"access_token": at, "token_type": "bearer", "refresh_token": rt,
				"bot_id": "b", "workspace_id": "w", "owner": map[string]any{"type": "user"}}
		},
		fail:   rfcError,
		revoke: revokeRFC7009,
	})
}
