package connector

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// grantServer is a token endpoint that records the last request's form
// and answers with answer.
func grantServer(t *testing.T, status int, answer string) (*httptest.Server, *url.Values, *http.Header) {
	var form url.Values
	var hdr http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		form, hdr = r.PostForm, r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, &form, &hdr
}

func grantConnector(t *testing.T, tokenURL string, grant Grant, style AuthStyle) *Connector {
	t.Helper()
	c, err := New(Config{Name: "g", TokenURL: tokenURL, ClientID: "app", ClientSecret: "s3cret",
		AuthStyle: style, Grant: grant, Scopes: []string{"api://upstream/.default"},
		Audience: "https://upstream.example", ExchangeResource: "https://upstream.example/api"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGrantRequests(t *testing.T) {
	const ok = `{"access_token":"new","token_type":"Bearer","expires_in":3600}`
	tests := []struct {
		grant Grant
		call  func(*Connector) error
		want  map[string]string
	}{
		{GrantClientCredentials, func(c *Connector) error { _, err := c.ClientCredentials(context.Background()); return err },
			map[string]string{"grant_type": "client_credentials", "scope": "api://upstream/.default"}},
		{GrantOnBehalfOf, func(c *Connector) error { _, err := c.OnBehalfOf(context.Background(), "user-token"); return err },
			map[string]string{"grant_type": GrantTypeJWTBearer, "requested_token_use": "on_behalf_of",
				"assertion": "user-token", "scope": "api://upstream/.default"}},
		{GrantTokenExchange, func(c *Connector) error { _, err := c.TokenExchange(context.Background(), "user-token"); return err },
			map[string]string{"grant_type": GrantTypeTokenExchange, "subject_token": "user-token",
				"subject_token_type": TokenTypeAccessToken, "requested_token_type": TokenTypeAccessToken,
				"audience": "https://upstream.example", "resource": "https://upstream.example/api", "scope": "api://upstream/.default"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.grant), func(t *testing.T) {
			for _, style := range []AuthStyle{AuthBasic, AuthPost} {
				srv, form, hdr := grantServer(t, 200, ok)
				if err := tt.call(grantConnector(t, srv.URL, tt.grant, style)); err != nil {
					t.Fatal(err)
				}
				for k, v := range tt.want {
					if got := form.Get(k); got != v {
						t.Errorf("%s: %s = %q, want %q", style, k, got, v)
					}
				}
				user, pass, basic := (&http.Request{Header: *hdr}).BasicAuth()
				switch style {
				case AuthBasic:
					if !basic || user != "app" || pass != "s3cret" || form.Has("client_secret") {
						t.Errorf("basic: the client did not authenticate with HTTP Basic only")
					}
				case AuthPost:
					if basic || form.Get("client_id") != "app" || form.Get("client_secret") != "s3cret" {
						t.Errorf("post: the client did not authenticate in the body")
					}
				}
			}
		})
	}
}

func TestGrantErrors(t *testing.T) {
	tests := []struct {
		status  int
		body    string
		subject bool  // ErrSubjectTokenRejected
		class   Class // of ClassOf
	}{
		{400, `{"error":"invalid_request","error_description":"subject_token is invalid"}`, true, Transient},
		{400, `{"error":"invalid_grant"}`, true, GrantRejected},
		{400, `{"error":"interaction_required","claims":"{}"}`, true, Transient},
		{401, `{"error":"invalid_client"}`, false, ClientRejected},
		{503, `{"error":"invalid_grant"}`, false, Transient},
		{429, `{"error":"invalid_request"}`, false, Transient},
	}
	for _, tt := range tests {
		srv, _, _ := grantServer(t, tt.status, tt.body)
		c := grantConnector(t, srv.URL, GrantTokenExchange, AuthBasic)
		_, err := c.TokenExchange(context.Background(), "user-token-secret")
		if err == nil {
			t.Fatalf("%d %s: no error", tt.status, tt.body)
		}
		if got := errors.Is(err, ErrSubjectTokenRejected); got != tt.subject {
			t.Errorf("%d %s: subject rejected = %v, want %v", tt.status, tt.body, got, tt.subject)
		}
		if got := ClassOf(err); got != tt.class {
			t.Errorf("%d %s: class %v, want %v", tt.status, tt.body, got, tt.class)
		}
		if strings.Contains(err.Error(), "user-token-secret") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	c := grantConnector(t, "http://127.0.0.1:1/token", GrantOnBehalfOf, AuthBasic)
	if _, err := c.OnBehalfOf(context.Background(), ""); !errors.Is(err, ErrSubjectTokenRejected) {
		t.Errorf("no user token: %v", err)
	}
}

func TestGrantConfig(t *testing.T) {
	for _, s := range []string{"", "authorization_code", "client_credentials", "on_behalf_of", "token_exchange"} {
		if _, err := ParseGrant(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := ParseGrant("password"); err == nil || !strings.Contains(err.Error(), "known: authorization_code") {
		t.Errorf("password: %v", err)
	}
	// No authorization URL nor redirect URI without a person authorizing.
	cfg := Config{Name: "app", TokenURL: "https://login.example/token", ClientID: "x", AuthStyle: AuthPost, Grant: GrantClientCredentials}
	if err := cfg.Validate(); err != nil {
		t.Errorf("client_credentials: %v", err)
	}
	cfg.Grant = GrantAuthorizationCode
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "is required") {
		t.Errorf("authorization_code without authorization_url: %v", err)
	}
	cfg.Grant = "password"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "unknown grant") {
		t.Errorf("unknown grant: %v", err)
	}
	// The Microsoft preset asks an application token for .default only.
	ms := Config{Name: "graph_app", Provider: "microsoft", Grant: GrantClientCredentials}
	if err := Preset(&ms, "contoso"); err != nil {
		t.Fatal(err)
	}
	if len(ms.Scopes) != 1 || ms.Scopes[0] != "https://graph.microsoft.com/.default" {
		t.Errorf("microsoft client_credentials scopes: %v", ms.Scopes)
	}
}
