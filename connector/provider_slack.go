package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// slack is Slack, following "Installing with OAuth",
// https://docs.slack.dev/authentication/installing-with-oauth, the
// oauth.v2.access method, https://docs.slack.dev/reference/methods/oauth.v2.access,
// and "Using token rotation", https://docs.slack.dev/authentication/using-token-rotation.
// One authorization gives a bot token (top level, scopes in scope) and a
// user token (under authed_user, scopes in user_scope), comma-separated;
// token_kind chooses which the connection keeps (default user). Tokens
// expire (12 hours) and refresh tokens rotate only when the app turned
// token rotation on. Slack answers errors with HTTP 200 and ok:false, and
// revokes with auth.revoke (https://docs.slack.dev/reference/methods/auth.revoke).
var _ = register(&Provider{
	Name:                 "slack",
	Doc:                  "https://docs.slack.dev/authentication/installing-with-oauth",
	AuthURL:              "https://slack.com/oauth/v2/authorize",
	TokenURL:             "https://slack.com/api/oauth.v2.access",
	RevocationURL:        "https://slack.com/api/auth.revoke",
	AuthStyle:            AuthBasic, // "avoid sending client_id and client_secret as parameters"
	ScopeSeparator:       ",",
	APIBase:              "https://slack.com/api",
	RotatesRefreshTokens: true,
	Setup:                slackSetup,
	Response:             slackResponse,
	Revoke:               revokeSlack,
})

func slackSetup(cfg *Config) error {
	switch cfg.TokenKind {
	case "", "user":
		cfg.TokenKind = "user"
		setDefault(&cfg.ScopeParam, "user_scope")
	case "bot":
	default:
		return fmt.Errorf("token_kind must be user or bot, got %q", cfg.TokenKind)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"users:read"}
	}
	return nil
}

// slackErrors are oauth.v2.access's error codes that say what RFC 6749's
// would (https://docs.slack.dev/reference/methods/oauth.v2.access#errors).
var slackErrors = map[string]string{
	"invalid_code":          "invalid_grant",
	"code_already_used":     "invalid_grant",
	"code_expired":          "invalid_grant",
	"invalid_refresh_token": "invalid_grant",
	"token_revoked":         "invalid_grant",
	"token_expired":         "invalid_grant",
	"bad_redirect_uri":      "invalid_grant",
	"invalid_code_verifier": "invalid_grant",
	"account_inactive":      "invalid_grant",
	"invalid_client_id":     "invalid_client",
	"bad_client_secret":     "invalid_client",
	"invalid_grant_type":    "unsupported_grant_type",
	"ratelimited":           "rate_limited",
	"service_unavailable":   "temporarily_unavailable",
	"internal_error":        "temporarily_unavailable",
	"fatal_error":           "temporarily_unavailable",
}

// slackResponse turns ok:false into an RFC 6749 error and, for user
// tokens, lifts authed_user's token to the top level.
func slackResponse(r *TokenResponse) {
	if ok, present := r.Body["ok"].(bool); present && !ok {
		code, _ := r.Body["error"].(string)
		r.Fail(mapError(code, slackErrors))
		return
	}
	if r.Status >= 300 {
		return
	}
	user, _ := r.Body["authed_user"].(map[string]any)
	delete(r.Body, "authed_user")
	if r.Config.TokenKind == "bot" {
		if tt, _ := r.Body["token_type"].(string); tt == "user" {
			r.Fail(http.StatusBadRequest, "invalid_scope") // no bot token granted
			return
		}
		r.Body["token_type"] = "Bearer" // Slack says "bot"
		return
	}
	if at, _ := user["access_token"].(string); at != "" {
		// The exchange: the user token is authed_user's.
		lifted := map[string]any{}
		for _, k := range []string{"access_token", "refresh_token", "expires_in", "scope", "token_type"} {
			if v, ok := user[k]; ok {
				lifted[k] = v
			}
		}
		for _, k := range []string{"team", "enterprise", "app_id", "is_enterprise_install"} {
			if v, ok := r.Body[k]; ok {
				lifted[k] = v
			}
		}
		r.Body = lifted
	} else if tt, _ := r.Body["token_type"].(string); tt != "user" {
		// A bot token only (no user scope granted), or a refresh that
		// answered for the bot: not the user token the connection keeps.
		r.Fail(http.StatusBadRequest, "invalid_scope")
		return
	}
	r.Body["token_type"] = "Bearer" // Slack says "user" or "bot"
}

// revokeSlack calls auth.revoke with the access token (refreshed first if
// it has expired), the only token it takes; Slack confirms with ok:true in a 200.
func revokeSlack(ctx context.Context, c *Connector, t Tokens) (bool, error) {
	req, err := c.bearerRevocation(ctx, t)
	if req == nil || err != nil {
		return false, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("connector %s: revoking: %s unreachable: %w", c.cfg.Name, redactURL(c.cfg.RevocationURL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	var out struct {
		OK      bool `json:"ok"`
		Revoked bool `json:"revoked"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out) != nil || !out.OK || !out.Revoked {
		status := resp.StatusCode
		if status == http.StatusOK {
			status = http.StatusBadRequest // ok:false, in a 200
		}
		return false, fmt.Errorf("connector %s: revoking: %w", c.cfg.Name, &ProviderError{Status: status})
	}
	return true, nil
}
