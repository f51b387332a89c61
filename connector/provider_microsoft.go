package connector

import (
	"net/url"
	"time"
)

// microsoft is Microsoft Entra ID (Microsoft Graph, SharePoint Online),
// following the Microsoft identity platform's authorization code flow,
// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
// and its refresh token lifetimes,
// https://learn.microsoft.com/entra/identity-platform/refresh-tokens.
// Entra ID has no revocation endpoint for clients.
var _ = register(&Provider{
	Name:      "microsoft",
	Doc:       "https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow",
	Endpoints: microsoftEndpoints,
	AuthStyle: AuthPost,
	Scopes:    []string{"https://graph.microsoft.com/.default", "offline_access"},
	APIBase:   "https://graph.microsoft.com",
	// Every refresh returns a new refresh token.
	RotatesRefreshTokens: true,
	// Refresh tokens expire after 90 days without use; refreshing
	// after 30 leaves two more tries.
	KeepAlive: MicrosoftKeepAlive,
	Setup:     microsoftSetup,
})

// microsoftSetup declares the cp1 client capability unless the
// configuration declares others (or none, with cae off): the client
// handles claims challenges, so Graph and SharePoint may apply Continuous
// Access Evaluation to its tokens,
// https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation
func microsoftSetup(cfg *Config) error {
	if cfg.ClientCapabilities == nil {
		cfg.ClientCapabilities = []string{MicrosoftCapability}
	}
	if len(cfg.Scopes) == 0 && cfg.Grant == GrantClientCredentials {
		// The application's token: the permissions granted to the app,
		// and no refresh token to ask for.
		// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
		cfg.Scopes = []string{"https://graph.microsoft.com/.default"}
	}
	return nil
}

// MicrosoftKeepAlive is the microsoft preset's keep-alive period.
const MicrosoftKeepAlive = 30 * 24 * time.Hour

// microsoftEndpoints are the tenant's endpoints; without a tenant, the
// multi-tenant common endpoints.
func microsoftEndpoints(_ *Config, tenant string) (auth, token, revocation string, err error) {
	if tenant == "" {
		tenant = "common"
	}
	base := "https://login.microsoftonline.com/" + url.PathEscape(tenant) + "/oauth2/v2.0/"
	return base + "authorize", base + "token", "", nil
}
