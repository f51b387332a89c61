package connector

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// answer is a RoundTripper that answers every request with one canned
// response and keeps the requests' bodies: what a token endpoint was sent.
type answer struct {
	status int
	body   string
	got    []string
	urls   []string
}

func (a *answer) RoundTrip(r *http.Request) (*http.Response, error) {
	b := ""
	if r.Body != nil {
		raw, _ := io.ReadAll(r.Body)
		b = string(raw)
	}
	a.got = append(a.got, b)
	a.urls = append(a.urls, r.URL.String())
	return &http.Response{StatusCode: a.status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(a.body)), Request: r}, nil
}

func presetConnector(t *testing.T, cfg Config, rt http.RoundTripper) *Connector {
	t.Helper()
	cfg.Name, cfg.ClientID, cfg.ClientSecret, cfg.RedirectURL = "c", "id", "secret", presetRedirect
	if err := Preset(&cfg, ""); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, rt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTokenResponseNormalised covers the token responses that x/oauth2
// would misread: no token_type, expires_in as a string or a fraction,
// none at all where the preset knows the lifetime.
func TestTokenResponseNormalised(t *testing.T) {
	tests := []struct {
		name     string
		provider string
		body     string
		lifetime time.Duration // 0: no expiry
	}{
		{"no token_type", "box", `{"access_token":"a","expires_in":3600}`, time.Hour},
		{"expires_in a string", "zoom", `{"access_token":"a","token_type":"bearer","expires_in":"3599"}`, 3599 * time.Second},
		{"expires_in a fraction", "linear", `{"access_token":"a","expires_in":59.6}`, 60 * time.Second},
		{"expires_in not a number", "linear", `{"access_token":"a","expires_in":"soon"}`, 0},
		{"no expires_in, default lifetime", "salesforce", `{"access_token":"a","instance_url":"https://x.my.salesforce.com"}`, SalesforceDefaultLifetime},
		{"no expires_in, none known", "notion", `{"access_token":"a","token_type":"bearer"}`, 0},
		{"github OAuth App token, which never expires", "github", `{"access_token":"a","token_type":"bearer","scope":"repo"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := presetConnector(t, Config{Provider: tt.provider}, &answer{status: 200, body: tt.body})
			before := time.Now()
			tok, err := c.Refresh(context.Background(), "rt")
			if err != nil {
				t.Fatal(err)
			}
			if tok.Type() != "Bearer" {
				t.Errorf("type %q", tok.Type())
			}
			switch {
			case tt.lifetime == 0 && !tok.Expiry.IsZero():
				t.Errorf("expiry %v, want none", tok.Expiry)
			case tt.lifetime > 0 && (tok.Expiry.Before(before.Add(tt.lifetime)) || tok.Expiry.After(time.Now().Add(tt.lifetime))):
				t.Errorf("expiry in %v, want %v", time.Until(tok.Expiry), tt.lifetime)
			}
		})
	}
}

// TestSlackResponses covers Slack's answers: errors in a 200, the user
// token under authed_user, and an exchange that granted no user token.
func TestSlackResponses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		kind  string
		body  string
		class Class
		err   string // empty: succeeds with access token "user-at"
	}{
		{"user token lifted", "user", `{"ok":true,"access_token":"bot-at","token_type":"bot","authed_user":{"id":"U","access_token":"user-at","token_type":"user","refresh_token":"user-rt","expires_in":43200}}`, 0, ""},
		{"bot token kept", "bot", `{"ok":true,"access_token":"user-at","token_type":"bot","authed_user":{"id":"U","access_token":"other"}}`, 0, ""},
		{"no user token granted", "user", `{"ok":true,"access_token":"bot-at","token_type":"bot","authed_user":{"id":"U"}}`, Transient, "400 invalid_scope"},
		{"invalid_code", "user", `{"ok":false,"error":"invalid_code"}`, GrantRejected, "400 invalid_grant"},
		{"bad_client_secret", "user", `{"ok":false,"error":"bad_client_secret"}`, ClientRejected, "401 invalid_client"},
		{"ratelimited", "user", `{"ok":false,"error":"ratelimited"}`, Transient, "429"},
		{"unknown error", "user", `{"ok":false,"error":"something_new"}`, Transient, "400 invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := presetConnector(t, Config{Provider: "slack", TokenKind: tt.kind}, &answer{status: 200, body: tt.body})
			tok, err := c.Exchange(ctx, "code", "verifier")
			if tt.err == "" {
				if err != nil || tok.AccessToken != "user-at" || tok.Type() != "Bearer" {
					t.Fatalf("token %+v, %v", tok, err)
				}
				if tt.kind == "user" && (tok.RefreshToken != "user-rt" || tok.Expiry.IsZero()) {
					t.Fatalf("user token's refresh token %q, expiry %v", tok.RefreshToken, tok.Expiry)
				}
				return
			}
			if err == nil || ClassOf(err) != tt.class || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v (class %v), want %q, class %v", err, ClassOf(err), tt.err, tt.class)
			}
		})
	}
}

// TestRepeatParams checks that a generic connector's resource indicator
// (RFC 8707) is sent again on refresh, and other parameters are not.
func TestRepeatParams(t *testing.T) {
	a := &answer{status: 200, body: `{"access_token":"a","token_type":"Bearer"}`}
	c := presetConnector(t, Config{AuthURL: "https://as/a", TokenURL: "https://as/t",
		AuthParams: map[string]string{"resource": "https://api.example.com", "prompt": "consent"}}, a)
	if _, err := c.Refresh(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	form, _ := url.ParseQuery(a.got[0])
	if form.Get("resource") != "https://api.example.com" || form.Has("prompt") || form.Get("grant_type") != "refresh_token" {
		t.Fatalf("refresh request %v", form)
	}
}

// TestPresetOptionErrors covers the presets' own options.
func TestPresetOptionErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Name: "s", Provider: "salesforce", Domain: "https://acme.my.salesforce.com"}, `connector s: domain must be login, test or a host name such as acme.my.salesforce.com, got "https://acme.my.salesforce.com"`},
		{Config{Name: "s", Provider: "salesforce", Domain: "acme.my.salesforce.com/x"}, "domain must be"},
		{Config{Name: "k", Provider: "slack", TokenKind: "app"}, `connector k: token_kind must be user or bot, got "app"`},
	} {
		cfg := tt.cfg
		if err := Preset(&cfg, ""); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestRevocationErrorsCarryNoToken checks that a failed revocation, for
// providers whose revocation request carries the token in its URL
// (HubSpot) or a header, reports the provider's status without the token.
func TestRevocationErrorsCarryNoToken(t *testing.T) {
	for _, provider := range []string{"hubspot", "github", "slack", "dropbox", "google", "zoom"} {
		t.Run(provider, func(t *testing.T) {
			a := &answer{status: 404, body: `{"message":"rt-canary not found"}`}
			c := presetConnector(t, Config{Provider: provider}, a)
			revoked, err := c.RevokeGrant(context.Background(), Tokens{Access: "at-canary", Refresh: "rt-canary"})
			var pe *ProviderError
			if revoked || err == nil || !errors.As(err, &pe) || pe.Status != 404 {
				t.Fatalf("RevokeGrant = %v, %v", revoked, err)
			}
			if strings.Contains(err.Error(), "canary") {
				t.Fatalf("error %q carries a token", err)
			}
		})
	}
	// HubSpot's request names the refresh token in its path: that is
	// the provider's API, and the only place it goes.
	a := &answer{status: 204}
	c := presetConnector(t, Config{Provider: "hubspot"}, a)
	if ok, err := c.RevokeGrant(context.Background(), Tokens{Access: "at", Refresh: "r/t?x"}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if a.urls[0] != "https://api.hubapi.com/oauth/v1/refresh-tokens/r%2Ft%3Fx" {
		t.Fatalf("hubspot revocation URL %s", a.urls[0])
	}
}
