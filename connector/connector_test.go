package connector

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestPreset(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		tenant   string
		wantAuth string
		wantTok  string
		wantScp  []string
		wantSty  AuthStyle
		wantErr  string
	}{
		{
			name:     "microsoft tenant",
			cfg:      Config{Name: "sp", Provider: "microsoft"},
			tenant:   "contoso.onmicrosoft.com",
			wantAuth: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
			wantTok:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
			wantScp:  []string{"https://graph.microsoft.com/.default", "offline_access"},
			wantSty:  AuthPost,
		},
		{
			name:     "microsoft without tenant is multi-tenant",
			cfg:      Config{Name: "sp", Provider: "microsoft", Scopes: []string{"Sites.Read.All"}, AuthStyle: AuthBasic},
			wantAuth: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
			wantTok:  "https://login.microsoftonline.com/common/oauth2/v2.0/token",
			wantScp:  []string{"Sites.Read.All"},
			wantSty:  AuthBasic,
		},
		{
			name:     "notion",
			cfg:      Config{Name: "n", Provider: "notion", AuthStyle: AuthPost},
			wantAuth: "https://api.notion.com/v1/oauth/authorize",
			wantTok:  "https://api.notion.com/v1/oauth/token",
			wantSty:  AuthBasic,
		},
		{
			name:     "generic defaults to basic",
			cfg:      Config{Name: "g", AuthURL: "https://as/a", TokenURL: "https://as/t"},
			wantAuth: "https://as/a",
			wantTok:  "https://as/t",
			wantSty:  AuthBasic,
		},
		{
			name:    "unknown provider",
			cfg:     Config{Name: "x", Provider: "nosuch"},
			wantErr: `connector x: unknown provider "nosuch" (known: atlassian, box, dropbox, github, google, hubspot, linear, microsoft, notion, salesforce, slack, zoom)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			err := Preset(&cfg, tt.tenant)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AuthURL != tt.wantAuth || cfg.TokenURL != tt.wantTok {
				t.Errorf("endpoints = %s, %s", cfg.AuthURL, cfg.TokenURL)
			}
			if !slices.Equal(cfg.Scopes, tt.wantScp) {
				t.Errorf("scopes = %v, want %v", cfg.Scopes, tt.wantScp)
			}
			if cfg.AuthStyle != tt.wantSty {
				t.Errorf("auth style = %s, want %s", cfg.AuthStyle, tt.wantSty)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := Config{Name: "c", ClientID: "id", AuthURL: "https://as/a", TokenURL: "https://as/t", RedirectURL: "https://me/cb", AuthStyle: AuthBasic}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no client id", func(c *Config) { c.ClientID = "" }, "connector c: client_id is required"},
		{"relative token url", func(c *Config) { c.TokenURL = "/token" }, "connector c: token_url must be an absolute http(s) URL"},
		{"ftp auth url", func(c *Config) { c.AuthURL = "ftp://as/a" }, "connector c: authorization_url must be an absolute http(s) URL"},
		{"bad auth style", func(c *Config) { c.AuthStyle = "auto" }, `connector c: auth_style must be basic, post, private_key_jwt or client_assertion, got "auto"`},
		{"redirect with fragment", func(c *Config) { c.RedirectURL = "https://me/cb#x" }, "redirect_uri must not have a fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestAuthCodeURL(t *testing.T) {
	cfg := Config{Name: "n", Provider: "notion", ClientID: "cid", RedirectURL: "http://localhost:8080/oauth/callback", PKCE: true}
	if err := Preset(&cfg, ""); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier := oauth2.GenerateVerifier()
	u, err := url.Parse(c.AuthCodeURL("st", verifier))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	want := map[string]string{
		"response_type":         "code",
		"client_id":             "cid",
		"redirect_uri":          "http://localhost:8080/oauth/callback",
		"state":                 "st",
		"code_challenge_method": "S256",
		"code_challenge":        oauth2.S256ChallengeFromVerifier(verifier),
		"owner":                 "user",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	if strings.Contains(u.String(), verifier) {
		t.Error("authorization URL carries the PKCE verifier")
	}

	cfg.PKCE = false
	c, _ = New(cfg, nil)
	if strings.Contains(c.AuthCodeURL("st", verifier), "code_challenge") {
		t.Error("pkce off still sends a challenge")
	}
}

// notionImitation imitates Notion's token endpoint, which cannot be reached
// offline: it accepts only HTTP Basic client authentication, a JSON body and
// a Notion-Version header, and answers without expires_in.
func notionImitation(t *testing.T, got *map[string]string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "notion-client" || pass != "notion-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		if r.Header.Get("Notion-Version") == "" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_request","error_description":"json body and Notion-Version required"}`)
			return
		}
		body := map[string]string{}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body["notion_version"] = r.Header.Get("Notion-Version")
		*got = body
		if r.URL.Path == "/revoke" {
			io.WriteString(w, `{}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"secret_notion_at","token_type":"bearer","bot_id":"b","workspace_id":"w","owner":{"type":"user"}}`)
	}))
}

func TestNotionTokenRequest(t *testing.T) {
	var got map[string]string
	srv := notionImitation(t, &got)
	defer srv.Close()
	cfg := Config{Name: "notion", Provider: "notion", ClientID: "notion-client", ClientSecret: "notion-secret",
		RedirectURL: "http://localhost:8080/oauth/callback", TokenURL: srv.URL, PKCE: true}
	if err := Preset(&cfg, ""); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Exchange(context.Background(), "the-code", "the-verifier")
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "secret_notion_at" || !tok.Expiry.IsZero() || tok.Type() != "Bearer" {
		t.Fatalf("token = %q, expiry %v, type %q", tok.AccessToken, tok.Expiry, tok.Type())
	}
	if got["grant_type"] != "authorization_code" || got["code"] != "the-code" ||
		got["redirect_uri"] != "http://localhost:8080/oauth/callback" || got["code_verifier"] != "the-verifier" ||
		got["notion_version"] != NotionVersion {
		t.Fatalf("token request body = %v", got)
	}
	if _, ok := got["client_secret"]; ok {
		t.Fatal("client secret sent in the body with basic auth")
	}
}

func TestNotionRevoke(t *testing.T) {
	var got map[string]string
	srv := notionImitation(t, &got)
	defer srv.Close()
	cfg := Config{Name: "notion", Provider: "notion", ClientID: "notion-client", ClientSecret: "notion-secret",
		RedirectURL: "http://localhost:8080/oauth/callback", TokenURL: srv.URL, RevocationURL: srv.URL + "/revoke"}
	if err := Preset(&cfg, ""); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := c.Revoke(context.Background(), "secret_notion_at", "access_token")
	if err != nil || !revoked {
		t.Fatalf("Revoke = %v, %v", revoked, err)
	}
	if got["token"] != "secret_notion_at" || got["notion_version"] != NotionVersion {
		t.Fatalf("revocation request = %v", got)
	}
	// The preset's default revocation endpoint.
	cfg = Config{Name: "n", Provider: "notion"}
	Preset(&cfg, "")
	if cfg.RevocationURL != "https://api.notion.com/v1/oauth/revoke" {
		t.Fatalf("notion revocation_url = %q", cfg.RevocationURL)
	}
}

func TestErrorClassification(t *testing.T) {
	c := &Connector{cfg: Config{Name: "demo"}}
	resp := func(code int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	tests := []struct {
		name       string
		err        error
		class      Class
		retryAfter time.Duration
		want       string
	}{
		{"invalid_grant", &oauth2.RetrieveError{Response: resp(400, ""), ErrorCode: "invalid_grant", ErrorDescription: "token rt-canary was revoked", Body: []byte("rt-canary")}, GrantRejected, 0, "token endpoint answered 400 invalid_grant"},
		{"invalid_client", &oauth2.RetrieveError{Response: resp(401, ""), ErrorCode: "invalid_client"}, ClientRejected, 0, "401 invalid_client"},
		{"invalid_client in a 400", &oauth2.RetrieveError{Response: resp(400, ""), ErrorCode: "invalid_client"}, ClientRejected, 0, "400 invalid_client"},
		{"unauthorized_client", &oauth2.RetrieveError{Response: resp(400, ""), ErrorCode: "unauthorized_client"}, ClientRejected, 0, "400 unauthorized_client"},
		{"unsupported_grant_type", &oauth2.RetrieveError{Response: resp(400, ""), ErrorCode: "unsupported_grant_type"}, ClientRejected, 0, "400 unsupported_grant_type"},
		{"401 without a code", &oauth2.RetrieveError{Response: resp(401, "")}, ClientRejected, 0, "token endpoint answered 401"},
		{"invalid_grant in a 5xx", &oauth2.RetrieveError{Response: resp(500, ""), ErrorCode: "invalid_grant"}, Transient, 0, "token endpoint answered 500 invalid_grant"},
		{"invalid_client in a 5xx", &oauth2.RetrieveError{Response: resp(502, ""), ErrorCode: "invalid_client"}, Transient, 0, "token endpoint answered 502 invalid_client"},
		{"server error", &oauth2.RetrieveError{Response: resp(503, "7"), Body: []byte("<html>rt-canary</html>")}, Transient, 7 * time.Second, "token endpoint answered 503"},
		{"rate limited", &oauth2.RetrieveError{Response: resp(429, "120"), ErrorCode: "invalid_grant"}, Transient, 2 * time.Minute, "token endpoint answered 429"},
		{"odd code", &oauth2.RetrieveError{Response: resp(400, ""), ErrorCode: "<script>rt-canary"}, Transient, 0, "token endpoint answered 400"},
		{"network", &url.Error{Op: "Post", URL: "https://as/token?x=1", Err: errors.New("connection refused")}, Transient, 0, "Post https://as/token: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.wrap("refreshing", tt.err)
			if got := ClassOf(err); got != tt.class {
				t.Errorf("class = %v, want %v (%v)", got, tt.class, err)
			}
			if got := RetryAfterOf(err); got != tt.retryAfter {
				t.Errorf("retry after = %v, want %v", got, tt.retryAfter)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "rt-canary") {
				t.Errorf("error %q leaks the provider's body", err)
			}
		})
	}
}

func TestCheckIssuer(t *testing.T) {
	const as = "https://as.example.com"
	tests := []struct {
		name     string
		required bool
		iss      string
		ok       bool
	}{
		{"matching iss", false, as, true},
		{"matching iss, required", true, as, true},
		{"other issuer", false, "https://evil.example.com", false},
		{"other issuer, trailing slash", false, as + "/", false},
		{"missing iss, not advertised", false, "", true},
		{"missing iss, advertised", true, "", false},
	}
	for _, tt := range tests {
		err := checkIssuer(as, tt.required, tt.iss)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrIssuerMismatch)) {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	// Without a configured issuer nothing is checked.
	c := &Connector{}
	if err := c.CheckIssuer(context.Background(), "https://anything"); err != nil {
		t.Fatal(err)
	}
}
