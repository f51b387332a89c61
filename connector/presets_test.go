package connector

import (
	"context"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/imitation"
)

// presetCase is one row of the README's provider table, as tested.
type presetCase struct {
	name     string
	provider string
	setup    func(*Config) // options beyond client_id and client_secret
	// What the preset's own authorization URL must be.
	authHost  string
	authPath  string
	scopeKey  string // default scope
	scope     string // the scopes as the URL carries them; empty: none
	params    map[string]string
	tokenURL  string
	revokeURL string
	// The imitation to run the flow against; nil: none (microsoft's is
	// elsewhere).
	imitate func(testing.TB) *imitation.Provider
	// What the flow must show.
	expires   bool // the access token has an expiry
	lifetime  time.Duration
	rotates   bool // a refresh returns a new refresh token, the old one dead
	keepsRT   bool // a refresh returns no (or the same) refresh token
	revokes   bool // disconnect revokes at the provider
	jsonBody  bool // token requests are JSON
	basicAuth bool // the client authenticates with HTTP Basic
	check     func(t *testing.T, tok *oauth2.Token)
}

var presetCases = []presetCase{
	{
		name: "google", provider: "google",
		authHost: "accounts.google.com", authPath: "/o/oauth2/v2/auth", scopeKey: "scope", scope: "openid email",
		params:   map[string]string{"access_type": "offline", "prompt": "consent"},
		tokenURL: "https://oauth2.googleapis.com/token", revokeURL: "https://oauth2.googleapis.com/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewGoogle(t) },
		expires: true, keepsRT: true, revokes: true,
	},
	{
		name: "github", provider: "github",
		authHost: "github.com", authPath: "/login/oauth/authorize",
		tokenURL: "https://github.com/login/oauth/access_token", revokeURL: "https://api.github.com/applications/imitation-client/grant",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewGitHub(t) },
		expires: true, rotates: true, revokes: true,
		check: func(t *testing.T, tok *oauth2.Token) {
			if v, _ := tok.Extra("refresh_token_expires_in").(float64); v != 15897600 {
				t.Errorf("refresh_token_expires_in = %v", tok.Extra("refresh_token_expires_in"))
			}
		},
	},
	{
		name: "slack user token", provider: "slack",
		authHost: "slack.com", authPath: "/oauth/v2/authorize", scopeKey: "user_scope", scope: "users:read",
		tokenURL: "https://slack.com/api/oauth.v2.access", revokeURL: "https://slack.com/api/auth.revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewSlack(t) },
		expires: true, rotates: true, revokes: true, basicAuth: true,
	},
	{
		name: "slack bot token", provider: "slack",
		setup: func(c *Config) {
			c.TokenKind = "bot"
			c.Scopes = []string{"channels:read", "chat:write"}
		},
		authHost: "slack.com", authPath: "/oauth/v2/authorize", scopeKey: "scope", scope: "channels:read,chat:write",
		tokenURL: "https://slack.com/api/oauth.v2.access", revokeURL: "https://slack.com/api/auth.revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewSlack(t) },
		expires: true, rotates: true, revokes: true, basicAuth: true,
	},
	{
		name: "atlassian", provider: "atlassian",
		authHost: "auth.atlassian.com", authPath: "/authorize", scopeKey: "scope", scope: "read:me offline_access",
		params:   map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
		tokenURL: "https://auth.atlassian.com/oauth/token",
		imitate:  func(t testing.TB) *imitation.Provider { return imitation.NewAtlassian(t) },
		expires:  true, rotates: true, jsonBody: true,
	},
	{
		name: "salesforce", provider: "salesforce",
		authHost: "login.salesforce.com", authPath: "/services/oauth2/authorize", scopeKey: "scope", scope: "api refresh_token",
		tokenURL: "https://login.salesforce.com/services/oauth2/token", revokeURL: "https://login.salesforce.com/services/oauth2/revoke",
		imitate: func(t testing.TB) *imitation.Provider {
			return imitation.NewSalesforce(t, "https://acme.my.salesforce.com")
		},
		expires: true, lifetime: SalesforceDefaultLifetime, keepsRT: true, revokes: true,
		check: func(t *testing.T, tok *oauth2.Token) {
			if tok.Extra("instance_url") != "https://acme.my.salesforce.com" {
				t.Errorf("instance_url = %v", tok.Extra("instance_url"))
			}
		},
	},
	{
		name: "salesforce sandbox", provider: "salesforce", setup: func(c *Config) { c.Domain = "test" },
		authHost: "test.salesforce.com", authPath: "/services/oauth2/authorize", scopeKey: "scope", scope: "api refresh_token",
		tokenURL: "https://test.salesforce.com/services/oauth2/token", revokeURL: "https://test.salesforce.com/services/oauth2/revoke",
	},
	{
		name: "salesforce my domain", provider: "salesforce", setup: func(c *Config) { c.Domain = "acme.my.salesforce.com" },
		authHost: "acme.my.salesforce.com", authPath: "/services/oauth2/authorize", scopeKey: "scope", scope: "api refresh_token",
		tokenURL: "https://acme.my.salesforce.com/services/oauth2/token", revokeURL: "https://acme.my.salesforce.com/services/oauth2/revoke",
	},
	{
		name: "hubspot", provider: "hubspot",
		authHost: "app.hubspot.com", authPath: "/oauth/authorize", scopeKey: "scope", scope: "oauth",
		tokenURL: "https://api.hubapi.com/oauth/v1/token", revokeURL: "https://api.hubapi.com/oauth/v1/refresh-tokens/",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewHubSpot(t) },
		expires: true, keepsRT: true, revokes: true,
	},
	{
		name: "dropbox", provider: "dropbox",
		authHost: "www.dropbox.com", authPath: "/oauth2/authorize",
		params:   map[string]string{"token_access_type": "offline"},
		tokenURL: "https://api.dropboxapi.com/oauth2/token", revokeURL: "https://api.dropboxapi.com/2/auth/token/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewDropbox(t) },
		expires: true, keepsRT: true, revokes: true, basicAuth: true,
	},
	{
		name: "box", provider: "box",
		authHost: "account.box.com", authPath: "/api/oauth2/authorize",
		tokenURL: "https://api.box.com/oauth2/token", revokeURL: "https://api.box.com/oauth2/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewBox(t) },
		expires: true, rotates: true, revokes: true,
	},
	{
		name: "zoom", provider: "zoom",
		authHost: "zoom.us", authPath: "/oauth/authorize",
		tokenURL: "https://zoom.us/oauth/token", revokeURL: "https://zoom.us/oauth/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewZoom(t) },
		expires: true, rotates: true, revokes: true, basicAuth: true,
	},
	{
		name: "linear", provider: "linear",
		authHost: "linear.app", authPath: "/oauth/authorize", scopeKey: "scope", scope: "read",
		tokenURL: "https://api.linear.app/oauth/token", revokeURL: "https://api.linear.app/oauth/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewLinear(t) },
		expires: true, rotates: true, revokes: true,
	},
	{
		name: "notion", provider: "notion",
		authHost: "api.notion.com", authPath: "/v1/oauth/authorize",
		params:   map[string]string{"owner": "user"},
		tokenURL: "https://api.notion.com/v1/oauth/token", revokeURL: "https://api.notion.com/v1/oauth/revoke",
		imitate: func(t testing.TB) *imitation.Provider { return imitation.NewNotion(t) },
		rotates: true, revokes: true, jsonBody: true, basicAuth: true,
	},
	{
		name: "microsoft", provider: "microsoft",
		authHost: "login.microsoftonline.com", authPath: "/common/oauth2/v2.0/authorize", scopeKey: "scope",
		scope:    "https://graph.microsoft.com/.default offline_access",
		tokenURL: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
	},
}

const presetRedirect = "https://connect.example.com/oauth/callback"

// TestPresetAuthorizationURL checks what each preset sets with only a
// client ID and secret, and the authorization URL it builds: host and
// path, scopes (parameter and separator), the parameters that make the
// provider issue a refresh token, and PKCE S256.
func TestPresetAuthorizationURL(t *testing.T) {
	for _, tc := range presetCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Name: "c", Provider: tc.provider, ClientID: imitation.ClientID, ClientSecret: imitation.ClientSecret,
				RedirectURL: presetRedirect, PKCE: true}
			if tc.setup != nil {
				tc.setup(&cfg)
			}
			if err := Preset(&cfg, ""); err != nil {
				t.Fatal(err)
			}
			if cfg.TokenURL != tc.tokenURL || cfg.RevocationURL != tc.revokeURL {
				t.Errorf("token_url %q, revocation_url %q; want %q, %q", cfg.TokenURL, cfg.RevocationURL, tc.tokenURL, tc.revokeURL)
			}
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			verifier := oauth2.GenerateVerifier()
			u, err := url.Parse(c.AuthCodeURL("the-state", verifier))
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "https" || u.Host != tc.authHost || u.Path != tc.authPath {
				t.Errorf("authorization URL %s://%s%s, want https://%s%s", u.Scheme, u.Host, u.Path, tc.authHost, tc.authPath)
			}
			q := u.Query()
			want := map[string]string{"response_type": "code", "client_id": imitation.ClientID, "redirect_uri": presetRedirect,
				"state": "the-state", "code_challenge_method": "S256", "code_challenge": oauth2.S256ChallengeFromVerifier(verifier)}
			for k, v := range tc.params {
				want[k] = v
			}
			for _, k := range []string{"scope", "user_scope"} {
				if k == tc.scopeKey {
					want[k] = tc.scope
				} else if q.Has(k) {
					t.Errorf("%s = %q, want none", k, q.Get(k))
				}
			}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, q.Get(k), v)
				}
			}
			if strings.Contains(u.String(), verifier) || strings.Contains(u.String(), imitation.ClientSecret) {
				t.Error("the authorization URL carries a secret")
			}
		})
	}
}

// TestPresetFlow runs each preset's code exchange, refresh and revocation
// against the imitation of its provider.
func TestPresetFlow(t *testing.T) {
	ctx := context.Background()
	for _, tc := range presetCases {
		if tc.imitate == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			imi := tc.imitate(t)
			cfg := Config{Name: "c", Provider: tc.provider, ClientID: imitation.ClientID, ClientSecret: imitation.ClientSecret,
				RedirectURL: presetRedirect, PKCE: true,
				AuthURL: imi.AuthURL(), TokenURL: imi.TokenURL(), RevocationURL: imi.RevocationURL()}
			if tc.setup != nil {
				tc.setup(&cfg)
			}
			if tc.provider == "github" {
				cfg.RevocationURL = imi.At("/applications/" + imitation.ClientID + "/grant")
			}
			if err := Preset(&cfg, ""); err != nil {
				t.Fatal(err)
			}
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			verifier := oauth2.GenerateVerifier()
			code, state, err := imi.Authorize(c.AuthCodeURL("st", verifier))
			if err != nil || state != "st" {
				t.Fatalf("authorize: %v (state %q)", err, state)
			}
			before := time.Now()
			tok, err := c.Exchange(ctx, code, verifier)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if _, ok := imi.Valid(tok.AccessToken); !ok {
				t.Fatalf("access token %q is not one the provider issued", tok.AccessToken)
			}
			if tok.Type() != "Bearer" {
				t.Errorf("token type %q", tok.Type())
			}
			if tok.Expiry.IsZero() == tc.expires {
				t.Errorf("expiry %v, want one: %v", tok.Expiry, tc.expires)
			}
			if tc.lifetime > 0 && (tok.Expiry.Before(before.Add(tc.lifetime)) || tok.Expiry.After(time.Now().Add(tc.lifetime))) {
				t.Errorf("expiry %v, want %v from now", tok.Expiry, tc.lifetime)
			}
			if tc.check != nil {
				tc.check(t, tok)
			}
			reqs := imi.Requests()
			exch := reqs[len(reqs)-1]
			if exch.JSON != tc.jsonBody || (exch.BasicUser != "") != tc.basicAuth {
				t.Errorf("token request: json %v, basic auth %v; want %v, %v", exch.JSON, exch.BasicUser != "", tc.jsonBody, tc.basicAuth)
			}
			if exch.Params["code_verifier"] != verifier {
				t.Error("the exchange did not send the PKCE verifier")
			}
			rt := tok.RefreshToken
			if rt == "" {
				t.Fatal("no refresh token")
			}

			tok2, err := c.Refresh(ctx, rt)
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if _, ok := imi.Valid(tok2.AccessToken); !ok || tok2.AccessToken == tok.AccessToken {
				t.Fatalf("refreshed access token %q", tok2.AccessToken)
			}
			switch {
			case tc.rotates:
				if tok2.RefreshToken == "" || tok2.RefreshToken == rt {
					t.Fatalf("refresh returned refresh token %q, want a new one", tok2.RefreshToken)
				}
				// The one used is dead: reusing it is invalid_grant.
				if _, err := c.Refresh(ctx, rt); ClassOf(err) != GrantRejected {
					t.Fatalf("refresh with the rotated-out token: %v, want grant rejected", err)
				}
				rt = tok2.RefreshToken
			case tc.keepsRT:
				if tok2.RefreshToken != "" && tok2.RefreshToken != rt {
					t.Fatalf("refresh returned refresh token %q, want none or the same", tok2.RefreshToken)
				}
			}
			if _, err := c.Refresh(ctx, "never-issued"); ClassOf(err) != GrantRejected {
				t.Errorf("refresh with an unknown token: %v, want grant rejected", err)
			}

			n := imi.Revocations()
			revoked, err := c.RevokeGrant(ctx, Tokens{Access: tok2.AccessToken, Refresh: rt})
			if revoked != tc.revokes || err != nil {
				t.Fatalf("RevokeGrant = %v, %v; want %v", revoked, err, tc.revokes)
			}
			if !tc.revokes {
				if imi.Revocations() != n {
					t.Fatal("a revocation request was sent")
				}
				return
			}
			if _, ok := imi.Valid(tok2.AccessToken); ok {
				t.Error("the access token is still valid after revocation")
			}
			if _, err := c.Refresh(ctx, rt); ClassOf(err) != GrantRejected {
				t.Errorf("refresh after revocation: %v, want grant rejected", err)
			}
			// Revoking again: the provider no longer knows the grant.
			if revoked, err := c.RevokeGrant(ctx, Tokens{Access: tok2.AccessToken, Refresh: rt}); revoked && tc.provider != "box" && tc.provider != "zoom" && tc.provider != "linear" && tc.provider != "notion" {
				t.Errorf("revoking a revoked grant reported revoked (%v)", err)
			}
		})
	}
}

// TestPresetClientRejected checks that each provider's way of refusing
// the client (Slack's ok:false, GitHub's 200, HubSpot's status) is
// classified as the connector's configuration being refused.
func TestPresetClientRejected(t *testing.T) {
	for _, tc := range presetCases {
		if tc.imitate == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			imi := tc.imitate(t)
			cfg := Config{Name: "c", Provider: tc.provider, ClientID: imitation.ClientID, ClientSecret: "wrong",
				RedirectURL: presetRedirect, AuthURL: imi.AuthURL(), TokenURL: imi.TokenURL()}
			if tc.setup != nil {
				tc.setup(&cfg)
			}
			if err := Preset(&cfg, ""); err != nil {
				t.Fatal(err)
			}
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Refresh(context.Background(), "any")
			if ClassOf(err) != ClientRejected {
				t.Fatalf("refresh with a wrong secret: %v, want client rejected", err)
			}
			if strings.Contains(err.Error(), "imitation:") {
				t.Errorf("error %q repeats the provider's description", err)
			}
		})
	}
}

// TestRevokeWithExpiredAccessToken: providers whose revocation is
// authenticated by the access token get a live one, from a refresh, when
// the connection's has expired.
func TestRevokeWithExpiredAccessToken(t *testing.T) {
	ctx := context.Background()
	for _, tc := range presetCases {
		if tc.provider != "github" && tc.provider != "dropbox" && tc.name != "slack user token" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			imi := tc.imitate(t)
			cfg := Config{Name: "c", Provider: tc.provider, ClientID: imitation.ClientID, ClientSecret: imitation.ClientSecret,
				RedirectURL: presetRedirect, AuthURL: imi.AuthURL(), TokenURL: imi.TokenURL(), RevocationURL: imi.RevocationURL()}
			if tc.provider == "github" {
				cfg.RevocationURL = imi.At("/applications/" + imitation.ClientID + "/grant")
			}
			if err := Preset(&cfg, ""); err != nil {
				t.Fatal(err)
			}
			c, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			code, _, err := imi.Authorize(c.AuthCodeURL("st", ""))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Exchange(ctx, code, "")
			if err != nil {
				t.Fatal(err)
			}
			imi.Expire(tok.AccessToken)
			revoked, err := c.RevokeGrant(ctx, Tokens{Access: tok.AccessToken, Refresh: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)})
			if !revoked || err != nil {
				t.Fatalf("RevokeGrant = %v, %v", revoked, err)
			}
			if _, err := c.Refresh(ctx, tok.RefreshToken); ClassOf(err) != GrantRejected {
				t.Fatalf("the grant lives on: refresh %v", err)
			}
		})
	}
}

// TestReadmeProviderTable checks that the README's provider table has a
// row for every preset, citing the document the preset follows, and that
// every preset is among the cases tested here.
func TestReadmeProviderTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "| `"); ok {
			if i := strings.Index(name, "`"); i > 0 {
				rows[name[:i]] = line
			}
		}
	}
	tested := map[string]bool{}
	for _, tc := range presetCases {
		tested[tc.provider] = true
	}
	for _, name := range ProviderNames() {
		p, _ := LookupProvider(name)
		row, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("the README's provider table has no row for %s", name)
		case !strings.Contains(row, "]("+p.Doc+")"):
			t.Errorf("the README's row for %s does not cite %s", name, p.Doc)
		}
		if !tested[name] {
			t.Errorf("preset %s has no test case", name)
		}
		if p.Doc == "" || !strings.HasPrefix(p.Doc, "https://") {
			t.Errorf("preset %s cites no document", name)
		}
	}
}

// TestPresetDefaults checks the settings of each preset that the flow does
// not show: keep-alive periods (providers that expire idle refresh
// tokens), rotation, assumed lifetimes, and the metadata and upstream
// hosts that connection-dependent upstream URLs use.
func TestPresetDefaults(t *testing.T) {
	const day = 24 * time.Hour
	want := map[string]struct {
		keepAlive time.Duration
		rotates   bool
		lifetime  time.Duration
		metadata  string
		hosts     string
	}{
		"atlassian":  {30 * day, true, 0, "cloud_id", "api.atlassian.com"},
		"box":        {20 * day, true, 0, "", ""},
		"dropbox":    {0, false, 0, "", ""},
		"github":     {30 * day, true, 0, "", ""},
		"google":     {30 * day, false, 0, "", ""},
		"hubspot":    {0, false, 0, "", ""},
		"linear":     {0, true, 0, "", ""},
		"microsoft":  {30 * day, true, 0, "", ""},
		"notion":     {0, true, 0, "", ""},
		"salesforce": {0, false, 2 * time.Hour, "instance_url", "*.my.salesforce.com"},
		"slack":      {0, true, 0, "", ""},
		"zoom":       {30 * day, true, 0, "", ""},
	}
	for _, name := range ProviderNames() {
		w, ok := want[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		cfg := Config{Name: "c", Provider: name}
		if err := Preset(&cfg, ""); err != nil {
			t.Fatal(err)
		}
		p, _ := LookupProvider(name)
		if cfg.KeepAlive != w.keepAlive || cfg.RotatesRefreshTokens != w.rotates || cfg.DefaultLifetime != w.lifetime ||
			strings.Join(append(slices.Clone(p.DefaultMetadata), slices.Sorted(maps.Keys(discoveryPick(p)))...), " ") != w.metadata ||
			strings.Join(p.AllowedHosts, " ") != w.hosts {
			t.Errorf("%s: keepalive %v, rotates %v, lifetime %v, metadata %v, hosts %v; want %+v",
				name, cfg.KeepAlive, cfg.RotatesRefreshTokens, cfg.DefaultLifetime, p.DefaultMetadata, p.AllowedHosts, w)
		}
		if p.APIBase == "" {
			t.Errorf("%s: no upstream base URL for examples", name)
		}
	}
	// Configured values win over the preset's.
	cfg := Config{Name: "c", Provider: "google", KeepAlive: time.Hour, Scopes: []string{"https://www.googleapis.com/auth/drive.readonly"},
		AuthStyle: AuthBasic, AuthParams: map[string]string{"prompt": "select_account"}}
	if err := Preset(&cfg, ""); err != nil {
		t.Fatal(err)
	}
	if cfg.KeepAlive != time.Hour || len(cfg.Scopes) != 1 || cfg.AuthStyle != AuthBasic ||
		cfg.AuthParams["prompt"] != "select_account" || cfg.AuthParams["access_type"] != "offline" {
		t.Errorf("configured values lost: %+v", cfg)
	}
}

// discoveryPick is what the preset's discovery request after connecting
// keeps.
func discoveryPick(p *Provider) map[string]string {
	if p.MetadataDiscovery == nil {
		return nil
	}
	return p.MetadataDiscovery.Pick
}
