package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// github is GitHub, following "Generating a user access token for a GitHub
// App", https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app,
// and "Refreshing user access tokens",
// https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens.
// A GitHub App's user tokens expire after 8 hours and come with a refresh
// token that rotates and expires after 6 months (refresh_token_expires_in);
// an OAuth App's tokens never expire and have no refresh token. GitHub
// answers token errors with HTTP 200 and its own codes, and an app revokes
// its grant with DELETE /applications/{client_id}/grant
// (https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization).
var _ = register(&Provider{
	Name:      "github",
	Doc:       "https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app",
	Endpoints: githubEndpoints,
	AuthStyle: AuthPost,
	APIBase:   "https://api.github.com",
	// GitHub App user tokens: each refresh returns a new refresh token.
	RotatesRefreshTokens: true,
	KeepAlive:            30 * 24 * time.Hour,
	Revoke:               revokeGitHub,
	Response:             githubResponse,
})

func githubEndpoints(cfg *Config, _ string) (auth, token, revocation string, err error) {
	return "https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token",
		"https://api.github.com/applications/" + url.PathEscape(cfg.ClientID) + "/grant", nil
}

// githubErrors are GitHub's token endpoint error codes
// (https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors).
var githubErrors = map[string]string{
	"bad_verification_code":        "invalid_grant",
	"bad_refresh_token":            "invalid_grant",
	"redirect_uri_mismatch":        "invalid_grant",
	"incorrect_client_credentials": "invalid_client",
	"unverified_user_email":        "access_denied",
}

// githubResponse turns GitHub's errors in 200 responses into RFC 6749
// errors.
func githubResponse(r *TokenResponse) {
	if code, _ := r.Body["error"].(string); code != "" {
		r.Fail(mapError(code, githubErrors))
	}
}

// revokeGitHub deletes the app's grant, which revokes every token of it,
// authenticating with the client's credentials; the grant is named by an
// access token (refreshed first if it has expired). GitHub answers 204.
func revokeGitHub(ctx context.Context, c *Connector, t Tokens) (bool, error) {
	access := c.liveAccess(ctx, t)
	if access == "" {
		return false, nil
	}
	body, _ := json.Marshal(map[string]string{"access_token": access})
	req, err := c.revocationRequest(ctx, http.MethodDelete, c.cfg.RevocationURL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.SetBasicAuth(c.cfg.ClientID, c.cfg.ClientSecret)
	return c.sendRevocation(req, http.StatusNoContent)
}
