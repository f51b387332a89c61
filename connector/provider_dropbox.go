package connector

import (
	"context"
	"net/http"
)

// dropbox is Dropbox, following the OAuth guide,
// https://developers.dropbox.com/oauth-guide, and the API's oauth2/token
// and auth/token/revoke, https://www.dropbox.com/developers/documentation/http/documentation:
// token_access_type=offline brings a refresh token, which neither rotates
// nor expires; access tokens last 4 hours. Revocation is an RPC call
// authenticated by the access token, which also disables its refresh token.
var _ = register(&Provider{
	Name:          "dropbox",
	Doc:           "https://developers.dropbox.com/oauth-guide",
	AuthURL:       "https://www.dropbox.com/oauth2/authorize",
	TokenURL:      "https://api.dropboxapi.com/oauth2/token",
	RevocationURL: "https://api.dropboxapi.com/2/auth/token/revoke",
	AuthStyle:     AuthBasic,
	AuthParams:    map[string]string{"token_access_type": "offline"},
	APIBase:       "https://api.dropboxapi.com/2",
	Revoke:        revokeDropbox,
})

// revokeDropbox calls auth/token/revoke with the access token (refreshed
// first if it has expired) as its credential and no arguments; Dropbox
// answers 200.
func revokeDropbox(ctx context.Context, c *Connector, t Tokens) (bool, error) {
	req, err := c.bearerRevocation(ctx, t)
	if req == nil || err != nil {
		return false, err
	}
	return c.sendRevocation(req, http.StatusOK)
}
