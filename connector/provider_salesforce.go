package connector

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// salesforce is Salesforce, following "OAuth 2.0 Web Server Flow for Web
// App Integration",
// https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm,
// and "Revoke OAuth Tokens",
// https://help.salesforce.com/s/articleView?id=sf.remoteaccess_revoke_token.htm.
// The token response names the org's API host in instance_url and has no
// expires_in (the session timeout, 2 hours by default, applies); the
// refresh_token scope brings a refresh token. The login host is
// login.salesforce.com, test.salesforce.com for sandboxes, or the org's My
// Domain (domain option).
var _ = register(&Provider{
	Name:            "salesforce",
	Doc:             "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm",
	Endpoints:       salesforceEndpoints,
	AuthStyle:       AuthPost,
	Scopes:          []string{"api", "refresh_token"},
	APIBase:         "{instance_url}",
	DefaultLifetime: SalesforceDefaultLifetime,
	DefaultMetadata: []string{"instance_url"},
	AllowedHosts:    []string{"*.my.salesforce.com"},
})

// SalesforceDefaultLifetime is the access token lifetime assumed for
// Salesforce, whose token responses have no expires_in: its default
// session timeout. A shorter timeout is caught by the upstream's 401.
const SalesforceDefaultLifetime = 2 * time.Hour

// salesforceEndpoints are the login host's: cfg.Domain is login (or
// empty), test, or a host name such as acme.my.salesforce.com.
func salesforceEndpoints(cfg *Config, _ string) (auth, token, revocation string, err error) {
	host := cfg.Domain
	switch host {
	case "", "login":
		host = "login.salesforce.com"
	case "test":
		host = "test.salesforce.com"
	default:
		if !validHostName(host) {
			return "", "", "", fmt.Errorf("domain must be login, test or a host name such as acme.my.salesforce.com, got %q", host)
		}
	}
	base := "https://" + host + "/services/oauth2/"
	return base + "authorize", base + "token", base + "revoke", nil
}

// validHostName reports whether s is a DNS host name (with an optional
// port), nothing more: no scheme, path or user.
func validHostName(s string) bool {
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
		s = h
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}
