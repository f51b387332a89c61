package connector

import (
	"fmt"
	"net/url"
	"time"
)

// Preset fills in a provider's well-known settings. Values already set in
// cfg win over the preset's, except that a preset's token request format is
// always applied (the provider accepts nothing else).
func Preset(cfg *Config, tenant string) error {
	switch cfg.Provider {
	case "":
		if cfg.AuthStyle == "" {
			cfg.AuthStyle = AuthBasic // RFC 6749 2.3.1: servers must support it
		}
		return nil
	case "microsoft":
		if tenant == "" {
			tenant = "common"
		}
		base := "https://login.microsoftonline.com/" + url.PathEscape(tenant) + "/oauth2/v2.0/"
		setDefault(&cfg.AuthURL, base+"authorize")
		setDefault(&cfg.TokenURL, base+"token")
		if len(cfg.Scopes) == 0 {
			cfg.Scopes = []string{"https://graph.microsoft.com/.default", "offline_access"}
			if cfg.Grant == GrantClientCredentials {
				// The application's token: the permissions granted
				// to the app, and no refresh token to ask for.
				// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
				cfg.Scopes = cfg.Scopes[:1]
			}
		}
		if cfg.AuthStyle == "" {
			cfg.AuthStyle = AuthPost
		}
		if cfg.KeepAlive == 0 {
			// Entra ID refresh tokens expire after 90 days without
			// use; refreshing after 30 leaves two more tries.
			// https://learn.microsoft.com/entra/identity-platform/refresh-tokens
			cfg.KeepAlive = MicrosoftKeepAlive
		}
		if cfg.ClientCapabilities == nil {
			// The client handles claims challenges, so Graph and
			// SharePoint may apply Continuous Access Evaluation:
			// https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation
			cfg.ClientCapabilities = []string{MicrosoftCapability}
		}
		return nil
	case "notion":
		setDefault(&cfg.AuthURL, "https://api.notion.com/v1/oauth/authorize")
		setDefault(&cfg.TokenURL, "https://api.notion.com/v1/oauth/token")
		setDefault(&cfg.RevocationURL, "https://api.notion.com/v1/oauth/revoke")
		cfg.AuthStyle = AuthBasic
		cfg.TokenBody = BodyJSON
		if cfg.TokenHeaders == nil {
			cfg.TokenHeaders = map[string]string{}
		}
		if cfg.TokenHeaders["Notion-Version"] == "" {
			cfg.TokenHeaders["Notion-Version"] = NotionVersion
		}
		if cfg.AuthParams == nil {
			cfg.AuthParams = map[string]string{}
		}
		if cfg.AuthParams["owner"] == "" {
			cfg.AuthParams["owner"] = "user"
		}
		return nil
	default:
		return fmt.Errorf("connector %s: unknown provider %q (known: microsoft, notion)", cfg.Name, cfg.Provider)
	}
}

// MicrosoftKeepAlive is the microsoft preset's keep-alive period.
const MicrosoftKeepAlive = 30 * 24 * time.Hour

// MicrosoftCapability is the client capability the microsoft preset
// declares: "cp1", a client that handles claims challenges.
const MicrosoftCapability = "cp1"

// NotionVersion is the Notion-Version header sent on Notion token requests.
const NotionVersion = "2022-06-28"

func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}
