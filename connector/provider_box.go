package connector

import "time"

// box is Box, following "OAuth 2.0 Auth",
// https://developer.box.com/guides/authentication/oauth2/, "Refresh a
// Token", https://developer.box.com/guides/authentication/tokens/refresh/,
// and "Revoke a Token", https://developer.box.com/guides/authentication/tokens/revoke/:
// credentials in the form body, access tokens of 60 minutes, refresh
// tokens that are single-use (they rotate) and expire after 60 days;
// revocation is RFC 7009's form at /oauth2/revoke.
var _ = register(&Provider{
	Name:                 "box",
	Doc:                  "https://developer.box.com/guides/authentication/oauth2/",
	AuthURL:              "https://account.box.com/api/oauth2/authorize",
	TokenURL:             "https://api.box.com/oauth2/token",
	RevocationURL:        "https://api.box.com/oauth2/revoke",
	AuthStyle:            AuthPost,
	APIBase:              "https://api.box.com/2.0",
	RotatesRefreshTokens: true,
	// 60 days to live unused: refreshing after 20 leaves two more tries.
	KeepAlive: 20 * 24 * time.Hour,
})
