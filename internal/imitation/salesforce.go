package imitation

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewSalesforce imitates Salesforce's OAuth 2.0 web server flow, following
// https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm
// and https://help.salesforce.com/s/articleView?id=sf.remoteaccess_revoke_token.htm:
// the token response names the org's API host in instance_url, carries
// issued_at in milliseconds and no expires_in; a refresh token only with
// the refresh_token scope, kept (not rotated) on refresh; revocation
// posts the token to /services/oauth2/revoke. InstanceURL is the
// instance_url answered.
func NewSalesforce(t testing.TB, instanceURL string) *Provider {
	return newProvider(t, "salesforce", spec{
		authPath: "/services/oauth2/authorize", tokenPath: "/services/oauth2/token", revokePath: "/services/oauth2/revoke",
		clientAuth: "either",
		issue: func(p *Provider, g *Grant, refresh bool) (int, any) {
			at, rt := p.issue(g, !refresh && strings.Contains(" "+g.Scope+" ", " refresh_token "))
			body := map[string]any{"access_token": at, "instance_url": instanceURL,
				"id": "https://login.salesforce.com/id/00D/005", "token_type": "Bearer", "scope": g.Scope,
				"issued_at": fmt.Sprint(time.Now().UnixMilli()), "signature": "imitation"}
			if rt != "" {
				body["refresh_token"] = rt
			}
			return http.StatusOK, body
		},
		fail: rfcError,
		revoke: func(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
			if !p.revokeToken(req.Params["token"]) {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_token"})
				return
			}
			w.WriteHeader(http.StatusOK)
		},
	})
}
