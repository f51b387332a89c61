package imitation

import (
	"io"
	"net/http"
	"testing"
)

// NewDropbox imitates Dropbox's OAuth endpoints, following
// https://developers.dropbox.com/oauth-guide and
// https://www.dropbox.com/developers/documentation/http/documentation
// (oauth2/token, auth/token/revoke): a refresh token only with
// token_access_type=offline, not rotated on refresh; access tokens of 4
// hours; /2/auth/token/revoke takes the access token as its bearer
// credential and no arguments, disables it and its refresh token, and
// answers 200 with null.
func NewDropbox(t testing.TB) *Provider {
	return newProvider(t, "dropbox", spec{
		authPath: "/oauth2/authorize", tokenPath: "/oauth2/token", revokePath: "/2/auth/token/revoke",
		clientAuth: "either",
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, !refresh && g.Auth.Get("token_access_type") == "offline")
			body := map[string]any{"access_token": at, "expires_in": 14400, "token_type": "bearer",
				"scope": g.Scope, "account_id": "dbid:imitation", "uid": "1"}
			if rt != "" {
				body["refresh_token"] = rt
			}
			return http.StatusOK, body
		},
		fail: rfcError,
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			g, ok := p.Valid(bearer(r))
			if r.Method != http.MethodPost || !ok {
				writeJSON(w, http.StatusUnauthorized, map[string]any{"error_summary": "invalid_access_token/"})
				return
			}
			p.revokeGrant(g)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "null")
		},
	})
}
