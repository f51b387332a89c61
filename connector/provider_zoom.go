package connector

import "time"

// zoom is Zoom, following "OAuth 2.0 for Zoom",
// https://developers.zoom.us/docs/integrations/oauth/: HTTP Basic client
// authentication, access tokens of one hour, refresh tokens that rotate
// (each refresh returns a new one) and expire after 90 days; revocation is
// RFC 7009's form at /oauth/revoke.
var _ = register(&Provider{
	Name:                 "zoom",
	Doc:                  "https://developers.zoom.us/docs/integrations/oauth/",
	AuthURL:              "https://zoom.us/oauth/authorize",
	TokenURL:             "https://zoom.us/oauth/token",
	RevocationURL:        "https://zoom.us/oauth/revoke",
	AuthStyle:            AuthBasic,
	APIBase:              "https://api.zoom.us/v2",
	RotatesRefreshTokens: true,
	KeepAlive:            30 * 24 * time.Hour,
})
