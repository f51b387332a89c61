package imitation

import (
	"net/http"
	"testing"
)

// NewSlack imitates Slack's OAuth v2 endpoints with token rotation on,
// following https://docs.slack.dev/authentication/installing-with-oauth,
// https://docs.slack.dev/reference/methods/oauth.v2.access and
// https://docs.slack.dev/authentication/using-token-rotation: an exchange
// answers the bot token at the top level (scopes from scope) and the user
// token under authed_user (scopes from user_scope), each expiring in 12
// hours with a refresh token that rotates; a refresh answers the refreshed
// token at the top level with token_type bot or user; every answer is HTTP
// 200, errors as ok:false with Slack's codes (invalid_code,
// invalid_refresh_token, bad_client_secret). auth.revoke
// (https://docs.slack.dev/reference/methods/auth.revoke) takes the access
// token as a bearer token and answers {"ok":true,"revoked":true}.
func NewSlack(t testing.TB) *Provider {
	return newProvider(t, "slack", spec{
		authPath: "/oauth/v2/authorize", tokenPath: "/api/oauth.v2.access", revokePath: "/api/auth.revoke",
		clientAuth: "either",
		rotate:     true,
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			if refresh {
				at, rt := p.issue(g, true)
				return http.StatusOK, map[string]any{"ok": true, "access_token": at, "refresh_token": rt,
					"token_type": g.Kind, "expires_in": 43200, "scope": g.Scope}
			}
			body := map[string]any{"ok": true, "app_id": "A1", "team": map[string]any{"id": "T1", "name": "Imitation"},
				"authed_user": map[string]any{"id": "U1"}}
			if s := g.Auth.Get("scope"); s != "" {
				bot := &Grant{ID: g.ID, Kind: "bot", Scope: s, Auth: g.Auth}
				at, rt := p.issue(bot, true)
				body["access_token"], body["refresh_token"], body["token_type"] = at, rt, "bot"
				body["expires_in"], body["scope"], body["bot_user_id"] = 43200, s, "B1"
			}
			if s := g.Auth.Get("user_scope"); s != "" {
				user := &Grant{ID: g.ID, Kind: "user", Scope: s, Auth: g.Auth}
				at, rt := p.issue(user, true)
				body["authed_user"] = map[string]any{"id": "U1", "scope": s, "access_token": at,
					"token_type": "user", "refresh_token": rt, "expires_in": 43200}
			}
			return http.StatusOK, body
		},
		fail: func(code string, refresh bool) (int, any) {
			slack := map[string]string{"invalid_client": "bad_client_secret", "invalid_grant": "invalid_code",
				"unsupported_grant_type": "invalid_grant_type"}[code]
			if code == "invalid_grant" && refresh {
				slack = "invalid_refresh_token"
			}
			return http.StatusOK, map[string]any{"ok": false, "error": slack}
		},
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			tok := bearer(r)
			if tok == "" {
				tok = req.Params["token"]
			}
			if g, ok := p.Valid(tok); ok {
				p.revokeGrant(g)
				writeJSON(w, http.StatusOK, map[string]any{"ok": true, "revoked": true})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_auth"})
		},
	})
}
