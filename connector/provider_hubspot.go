package connector

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// hubspot is HubSpot, following "Working with OAuth",
// https://developers.hubspot.com/docs/api/working-with-oauth, and the OAuth
// tokens API, https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/guide:
// credentials in the form body, access tokens of 30 minutes, refresh
// tokens that do not rotate or expire. Errors name their kind in status
// (BAD_REFRESH_TOKEN…), not error. Revocation deletes the refresh token,
// DELETE /oauth/v1/refresh-tokens/{token}, which answers 204.
var _ = register(&Provider{
	Name:          "hubspot",
	Doc:           "https://developers.hubspot.com/docs/api/working-with-oauth",
	AuthURL:       "https://app.hubspot.com/oauth/authorize",
	TokenURL:      "https://api.hubapi.com/oauth/v1/token",
	RevocationURL: "https://api.hubapi.com/oauth/v1/refresh-tokens/",
	AuthStyle:     AuthPost,
	Scopes:        []string{"oauth"},
	APIBase:       "https://api.hubapi.com",
	Response:      hubspotResponse,
	Revoke:        revokeHubSpot,
})

// hubspotErrors are HubSpot's error kinds that say what RFC 6749's would.
var hubspotErrors = map[string]string{
	"BAD_AUTH_CODE":     "invalid_grant",
	"BAD_REFRESH_TOKEN": "invalid_grant",
	"BAD_REDIRECT_URI":  "invalid_grant",
	"BAD_CLIENT_ID":     "invalid_client",
	"BAD_CLIENT_SECRET": "invalid_client",
	"BAD_GRANT_TYPE":    "unsupported_grant_type",
}

func hubspotResponse(r *TokenResponse) {
	kind, _ := r.Body["status"].(string)
	if r.Status < 300 || kind == "" || r.Body["error"] != nil {
		return
	}
	status, code := mapError(kind, hubspotErrors)
	if r.Status >= 500 || r.Status == http.StatusTooManyRequests {
		status = r.Status
	}
	r.Fail(status, code)
}

// revokeHubSpot deletes the refresh token; with only an access token there
// is nothing HubSpot can revoke.
func revokeHubSpot(ctx context.Context, c *Connector, t Tokens) (bool, error) {
	if t.Refresh == "" {
		return false, nil
	}
	target := strings.TrimRight(c.cfg.RevocationURL, "/") + "/" + url.PathEscape(t.Refresh)
	req, err := c.revocationRequest(ctx, http.MethodDelete, target, nil)
	if err != nil {
		return false, err
	}
	return c.sendRevocation(req, http.StatusNoContent, http.StatusOK)
}
