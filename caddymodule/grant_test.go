package caddymodule

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// grantAnswer is a JSON error answer of the proxy.
type grantAnswer struct {
	Error         string `json:"error"`
	Message       string `json:"message"`
	ProviderError string `json:"provider_error"`
}

func decodeAnswer(t *testing.T, body string) grantAnswer {
	t.Helper()
	var a grantAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("not a JSON answer: %q", body)
	}
	return a
}

func TestGrantClientCredentialsProxy(t *testing.T) {
	s := startServer(t, testOptions{connector: "grant client_credentials\nscopes api.read"})
	// A storm of requests: one token request.
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(s.base + "/demo/items")
			if err != nil {
				bad.Add(1)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	forms := s.as.tokenRequests()
	if len(forms) != 1 || bad.Load() != 0 {
		t.Fatalf("200 concurrent requests: %d token requests, %d failures; want 1 and 0", len(forms), bad.Load())
	}
	if f := forms[0]; f.Get("grant_type") != "client_credentials" || f.Get("scope") != "api.read" || f.Has("code_verifier") {
		t.Errorf("token request %v", f)
	}
	// The app's own credentials never reach the upstream.
	c := newClient()
	resp, _ := c.do(t, "GET", s.base+"/demo/me", http.Header{"Authorization": {"Bearer app-secret"}}, "")
	if resp.StatusCode != http.StatusOK || s.up.last(t).Header.Get("Authorization") != "Bearer at-1" {
		t.Fatalf("upstream got %q (status %d)", s.up.last(t).Header.Get("Authorization"), resp.StatusCode)
	}

	// No connections to authorize or disconnect.
	for _, m := range []string{"GET", "DELETE"} {
		u := s.base + "/oauth/connectors/demo/authorize"
		if m == "DELETE" {
			u = s.base + "/oauth/connectors/demo"
		}
		resp, body := c.do(t, m, u, nil, "")
		if a := decodeAnswer(t, body); resp.StatusCode != http.StatusConflict || a.Error != "no_connections" || !strings.Contains(a.Message, "client_credentials") {
			t.Errorf("%s %s: %d %s", m, u, resp.StatusCode, body)
		}
	}
	// The status says "application", with its token held.
	_, body := c.do(t, "GET", s.base+"/oauth/connectors", http.Header{"Accept": {"application/json"}}, "")
	var list []connectorStatus
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 {
		t.Fatalf("status: %s", body)
	}
	if st := list[0]; st.Status != "application" || st.Token != "token_held" || st.Grant != "client_credentials" || st.AuthorizeURL != "" || st.ExpiresAt == nil {
		t.Errorf("status %+v", st)
	}
	_, page := c.do(t, "GET", s.base+"/oauth/", nil, "")
	if !strings.Contains(page, "client_credentials: token_held") || strings.Contains(page, `data-action="connect"`) {
		t.Errorf("connect page:\n%s", page)
	}
}

func TestGrantClientCredentialsRefused(t *testing.T) {
	s := startServer(t, testOptions{connector: "grant client_credentials\nclient_secret wrong-secret"})
	c := newClient()
	for range 3 {
		resp, body := c.do(t, "GET", s.base+"/demo/items", nil, "")
		a := decodeAnswer(t, body)
		if resp.StatusCode != http.StatusServiceUnavailable || a.Error != "token_unavailable" || a.ProviderError != "invalid_client" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if strings.Contains(body, "wrong-secret") || strings.Contains(body, "echoed") {
			t.Fatalf("the answer shows what the provider echoed: %s", body)
		}
	}
	if n := len(s.as.tokenRequests()); n != 1 {
		t.Errorf("3 requests during the backoff made %d token requests, want 1", n)
	}
	if s.up.calls() != 0 {
		t.Errorf("the upstream was called without a token")
	}
	_, body := c.do(t, "GET", s.base+"/oauth/connectors", http.Header{"Accept": {"application/json"}}, "")
	if !strings.Contains(body, `"token":"error"`) || !strings.Contains(body, `"last_error":"invalid_client"`) {
		t.Errorf("status: %s", body)
	}
}

func TestGrantTokenExchangeProxy(t *testing.T) {
	s := startServer(t, testOptions{connector: "grant token_exchange\naudience https://upstream.example\nscopes api.read"})
	c := newClient()
	// No user token: 401, nothing exchanged.
	resp, body := c.do(t, "GET", s.base+"/demo/items", nil, "")
	if a := decodeAnswer(t, body); resp.StatusCode != http.StatusUnauthorized || a.Error != "user_token_required" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("without a user token: %d %s", resp.StatusCode, body)
	}
	// Each incoming token is exchanged once; the upstream sees only the
	// exchanged one.
	for _, user := range []string{"user-a", "user-b", "user-a", "user-b", "user-a"} {
		resp, body := c.do(t, "GET", s.base+"/demo/items", http.Header{"Authorization": {"Bearer " + user}}, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", user, resp.StatusCode, body)
		}
		if got := s.up.last(t).Header.Get("Authorization"); got == "Bearer "+user || !strings.HasPrefix(got, "Bearer at-") {
			t.Fatalf("the upstream got %q for %s", got, user)
		}
	}
	forms := s.as.tokenRequests()
	if len(forms) != 2 {
		t.Fatalf("5 requests with 2 user tokens made %d exchanges, want 2", len(forms))
	}
	f := forms[0]
	for k, v := range map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": "user-a",
		"subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"audience": "https://upstream.example", "scope": "api.read"} {
		if f.Get(k) != v {
			t.Errorf("exchange %s = %q, want %q", k, f.Get(k), v)
		}
	}
	// A refused token: 401 JSON, with the provider's code, never echoing.
	resp, body = c.do(t, "GET", s.base+"/demo/items", http.Header{"Authorization": {"Bearer refused"}}, "")
	if a := decodeAnswer(t, body); resp.StatusCode != http.StatusUnauthorized || a.Error != "subject_token_rejected" || a.ProviderError != "invalid_request" || strings.Contains(body, "echoed") {
		t.Fatalf("refused: %d %s", resp.StatusCode, body)
	}
	_, body = c.do(t, "GET", s.base+"/oauth/connectors", http.Header{"Accept": {"application/json"}}, "")
	if !strings.Contains(body, `"status":"exchange"`) || !strings.Contains(body, `"grant":"token_exchange"`) {
		t.Errorf("status: %s", body)
	}
}

func TestGrantOnBehalfOfKeepsRefreshTokenPerUser(t *testing.T) {
	s := startServer(t, testOptions{connector: "grant on_behalf_of\nsubject {http.request.header.X-User}"})
	c := newClient()
	resp, body := c.do(t, "GET", s.base+"/demo/items", http.Header{"Authorization": {"Bearer alice-token"}, "X-User": {"alice"}}, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	f := s.as.tokenRequests()[0]
	if f.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || f.Get("requested_token_use") != "on_behalf_of" || f.Get("assertion") != "alice-token" {
		t.Errorf("on-behalf-of request %v", f)
	}
	if got := s.up.last(t).Header.Get("Authorization"); got != "Bearer at-1" {
		t.Errorf("upstream got %q", got)
	}
	// The refresh token is alice's connection now.
	_, body = c.do(t, "GET", s.base+"/oauth/connectors", http.Header{"Accept": {"application/json"}, "X-User": {"alice"}}, "")
	if !strings.Contains(body, `"grant":"on_behalf_of"`) {
		t.Errorf("status: %s", body)
	}
	v, err := caddy.ActiveContext().AppIfConfigured("oauthconn")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.(*App).keeper.Stored(t.Context(), tokens.Key{Connector: "demo", Subject: "alice"})
	if err != nil || tok.RefreshToken != "rt-1" {
		t.Errorf("stored for alice: %v, refresh token %q", err, tok.RefreshToken)
	}
	// Alice's next user token (her app got a new one) renews her
	// connection: new tokens, the same connection.
	if resp, body := c.do(t, "GET", s.base+"/demo/items", http.Header{"Authorization": {"Bearer alice-token-2"}, "X-User": {"alice"}}, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("second user token: %d %s", resp.StatusCode, body)
	}
	again, err := v.(*App).keeper.Stored(t.Context(), tokens.Key{Connector: "demo", Subject: "alice"})
	if err != nil || again.Generation != tok.Generation || again.RefreshToken == tok.RefreshToken || len(s.as.tokenRequests()) != 2 {
		t.Errorf("after alice's second user token: %v, generation %q (was %q), refresh token %q (was %q), %d token requests",
			err, again.Generation, tok.Generation, again.RefreshToken, tok.RefreshToken, len(s.as.tokenRequests()))
	}
	// Without a subject, the user is unknown: 400, nothing exchanged.
	resp, _ = c.do(t, "GET", s.base+"/demo/items", http.Header{"Authorization": {"Bearer bob-token"}}, "")
	if resp.StatusCode != http.StatusBadRequest || len(s.as.tokenRequests()) != 2 {
		t.Errorf("without a subject: %d, %d token requests", resp.StatusCode, len(s.as.tokenRequests()))
	}
}

func TestGrantConfigErrors(t *testing.T) {
	conn := func(opts string) string {
		return global("public_url http://localhost:8080\nconnector a {\ntoken_url https://as/t\nclient_id x\n" + opts + "\n}")
	}
	tests := []struct {
		name string
		src  string
		want string // empty: loads
	}{
		{"client_credentials without authorization_url", conn("grant client_credentials"), ""},
		{"client_credentials without public_url", global("connector a {\ntoken_url https://as/t\nclient_id x\ngrant client_credentials\n}"), ""},
		{"token_exchange options", conn("grant token_exchange\naudience urn:upstream\nexchange_resource https://api\nrequested_token_type urn:ietf:params:oauth:token-type:jwt\nexchange_cache_size 50"), ""},
		{"client_credentials with subject", conn("grant client_credentials\nsubject {http.auth.user.id}"), "grant client_credentials gets the application's own token, for no user: remove subject"},
		{"unknown grant", conn("grant password"), `unknown grant "password"`},
		{"unknown grant by placeholder", conn("grant {env.OAUTHCONN_TEST_GRANT}"), `unknown grant "implicit"`},
		{"audience without token_exchange", conn("grant on_behalf_of\naudience urn:x"), "audience, exchange_resource and requested_token_type are options of grant token_exchange"},
		{"exchange_cache_size without exchange", conn("grant client_credentials\nexchange_cache_size 10"), "exchange_cache_size is an option of grants on_behalf_of and token_exchange"},
		{"exchange_cache_size zero", conn("grant token_exchange\nexchange_cache_size 0"), `exchange_cache_size must be a positive number, got "0"`},
		{"grant arity", conn("grant"), "wrong argument count"},
	}
	t.Setenv("OAUTHCONN_TEST_GRANT", "implicit")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := load(tt.src)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestReadmeGrantExamples loads the README's Microsoft grant connectors.
func TestReadmeGrantExamples(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MS_TENANT_ID", "contoso.onmicrosoft.com")
	t.Setenv("MS_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
	t.Setenv("MS_CLIENT_SECRET", "secret")
	// The grant examples are in the Microsoft section's App-only
	// subsection and after it.
	_, readme, found := strings.Cut(string(b), "### App-only")
	if !found {
		t.Fatal("the README's App-only subsection is gone; update this test")
	}
	for _, name := range []string{"graph_app", "graph_obo"} {
		_, rest, ok := strings.Cut(readme, "```caddyfile\nconnector "+name+" {\n")
		block, _, ok2 := strings.Cut(rest, "\n}\n```")
		if !ok || !ok2 {
			t.Fatalf("the README's connector %s example is gone; update this test", name)
		}
		src := global("public_url http://localhost:8080\nconnector " + name + " {\n" + block + "\n}")
		if err := load(src); err != nil {
			t.Errorf("README connector %s: %v", name, err)
		}
	}
}
