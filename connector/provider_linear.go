package connector

// linear is Linear, following "OAuth 2.0 authentication",
// https://linear.app/developers/oauth-2-0-authentication: comma-separated
// scopes (read at least), credentials in the form body, access tokens of
// 24 hours with refresh tokens that rotate (applications since October
// 2025), and RFC 7009 revocation at /oauth/revoke.
var _ = register(&Provider{
	Name:                 "linear",
	Doc:                  "https://linear.app/developers/oauth-2-0-authentication",
	AuthURL:              "https://linear.app/oauth/authorize",
	TokenURL:             "https://api.linear.app/oauth/token",
	RevocationURL:        "https://api.linear.app/oauth/revoke",
	AuthStyle:            AuthPost,
	Scopes:               []string{"read"},
	ScopeSeparator:       ",",
	APIBase:              "https://api.linear.app",
	RotatesRefreshTokens: true,
})
