package connector

import "time"

// atlassian is Atlassian Cloud (Jira, Confluence), following "OAuth 2.0
// (3LO) apps", https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/:
// the authorization URL carries audience=api.atlassian.com and
// prompt=consent, the offline_access scope brings a refresh token, token
// requests are JSON with the client's credentials in the body, and refresh
// tokens rotate and expire after 90 days of inactivity. The refresh
// request needs no audience again. APIs are reached at
// https://api.atlassian.com/ex/jira/{cloud id}, the cloud id coming from
// https://api.atlassian.com/oauth/token/accessible-resources. Atlassian
// has no revocation endpoint for 3LO apps (users revoke access in their
// account settings).
var _ = register(&Provider{
	Name:                 "atlassian",
	Doc:                  "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/",
	AuthURL:              "https://auth.atlassian.com/authorize",
	TokenURL:             "https://auth.atlassian.com/oauth/token",
	AuthStyle:            AuthPost,
	TokenBody:            BodyJSON,
	Scopes:               []string{"read:me", "offline_access"},
	AuthParams:           map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
	APIBase:              "https://api.atlassian.com/ex/jira/{cloud_id}",
	RotatesRefreshTokens: true,
	KeepAlive:            30 * 24 * time.Hour,
	// The site's cloud id, which the REST paths need, is the first
	// accessible resource's id:
	// https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#3-1-get-the-cloudid-for-your-site
	MetadataDiscovery: &Discovery{URL: "https://api.atlassian.com/oauth/token/accessible-resources", Pick: map[string]string{"cloud_id": "0.id"}},
	AllowedHosts:      []string{"api.atlassian.com"},
})
