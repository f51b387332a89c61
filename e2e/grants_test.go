package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/imitation"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/zitadelop"
)

// The grants without connections: client_credentials against Ory Hydra,
// RFC 8693 token exchange against zitadel/oidc's OP, and Entra's
// on-behalf-of request against its imitation.

const grantsCaddyfile = `{
	admin localhost:2999
	oauthconn {
		public_url http://localhost:9080
		store vault {
			address {env.VAULT_ADDR}
			token {env.VAULT_TOKEN}
			mount secret
			prefix %[1]s
		}
		connector %[2]s {
			%[3]s
		}
	}
}

http://localhost:9080 {
	oauthconn_connect /oauth/*
	handle_path /api/* {
		oauthconn_proxy %[2]s %[4]s {
			# A storm opens as many connections upstream as it has
			# requests; on a loaded 2-core runner the accepts lag.
			transport http {
				dial_timeout 30s
			}
		}
	}
}
`

// grantSidecar loads a Caddyfile with one connector and a proxy to
// upstream at http://localhost:9080/api/.
func grantSidecar(t *testing.T, name, connector, upstream string) *sidecar {
	t.Helper()
	env := testservices.Vault(t)
	s := &sidecar{base: "http://localhost:9080", prefix: "e2e-" + hydradev.RandomHex(6)}
	caddytest.NewTester(t).InitServer(fmt.Sprintf(grantsCaddyfile, s.prefix, name, connector, upstream), "caddyfile")
	vc, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(env.Token)
	s.vault = vc
	return s
}

// proxyAnswer is the proxy's JSON error answer.
type proxyAnswer struct {
	Error         string `json:"error"`
	ProviderError string `json:"provider_error"`
}

func getWith(t *testing.T, u string, hdr http.Header) (*http.Response, string, proxyAnswer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a proxyAnswer
	json.Unmarshal(b, &a)
	return resp, string(b), a
}

// hydraAppClient registers a client for the client credentials grant only.
func hydraAppClient(t *testing.T, h *hydra) hydradev.Client {
	t.Helper()
	c := hydradev.Client{Secret: hydradev.RandomHex(16)}
	b, _ := json.Marshal(map[string]any{
		"client_secret": c.Secret, "grant_types": []string{"client_credentials"},
		"scope": "api.read", "token_endpoint_auth_method": "client_secret_basic",
	})
	resp, err := http.Post(h.AdminURL+"/admin/clients", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("registering the client: %d %v", resp.StatusCode, err)
	}
	c.ID = out.ClientID
	// The test Hydra's tokens live 6s; the storm must not outlast its
	// token, or a renewal would be counted as a second request.
	b, _ = json.Marshal(map[string]string{"client_credentials_grant_access_token_lifespan": "1h"})
	req, _ := http.NewRequest(http.MethodPut, h.AdminURL+"/admin/clients/"+url.PathEscape(c.ID)+"/lifespans", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setting the client's token lifespan: %d", resp.StatusCode)
	}
	return c
}

// introspect returns what Hydra's admin API says of a token.
func introspect(t *testing.T, h *hydra, token string) map[string]any {
	t.Helper()
	resp, err := http.PostForm(h.AdminURL+"/admin/oauth2/introspect", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func appConnector(tokenURL string, c hydradev.Client) string {
	return fmt.Sprintf("token_url %s/oauth2/token\n\t\t\tclient_id %s\n\t\t\tclient_secret %s\n\t\t\tauth_style basic\n\t\t\tgrant client_credentials\n\t\t\tscopes api.read", tokenURL, c.ID, c.Secret)
}

func TestGrantClientCredentialsStorm(t *testing.T) {
	h := newHydra(t)
	// The storm's upstream only records what it gets (introspecting
	// 1,000 tokens would load Hydra, not the proxy); the token it got is
	// introspected once, below.
	up := newRecorder(t)
	counter := h.countTokens(t)
	c := hydraAppClient(t, h)
	// The first token request waits behind 1,000 connections on a loaded
	// runner: let the storm wait for it rather than time out.
	s := grantSidecar(t, "graph_app", appConnector(counter.URL, c)+"\n\t\t\tmax_wait 2m", up.URL)

	if bad := storm(1000, s.base+"/api/items"); bad != 0 {
		t.Fatalf("%d of 1000 concurrent requests failed", bad)
	}
	if n, total := counter.Count("client_credentials"), counter.Total(); n != 1 || total != 1 {
		t.Fatalf("1000 concurrent requests made %d client_credentials requests (%d token requests in all), want 1", n, total)
	}
	// The upstream got the application's token: Hydra says it is the
	// client's, for no user.
	if got := up.distinct(); len(got) != 1 || up.count() != 1000 {
		t.Fatalf("the upstream got %d requests with %d distinct Authorization headers, want 1000 with 1", up.count(), len(got))
	}
	tok, _ := strings.CutPrefix(up.last(), "Bearer ")
	info := introspect(t, h, tok)
	if info["active"] != true || info["client_id"] != c.ID || info["scope"] != "api.read" {
		t.Fatalf("introspection: %v", info)
	}
	if sub, _ := info["sub"].(string); sub != c.ID {
		t.Errorf("the token's sub is %q, not the client %q: a user's token?", sub, c.ID)
	}
	if _, ok := info["ext"]; ok && info["username"] != nil {
		t.Errorf("the token names a user: %v", info)
	}
	// Status: an application holding its token.
	_, body, _ := getWith(t, "http://localhost:2999/oauthconn/connectors", nil)
	if !strings.Contains(body, `"status":"application"`) || !strings.Contains(body, `"token":"token_held"`) {
		t.Errorf("admin status: %s", body)
	}
	// No connections to authorize.
	resp, body, a := getWith(t, s.base+"/oauth/connectors/graph_app/authorize", nil)
	if resp.StatusCode != http.StatusConflict || a.Error != "no_connections" {
		t.Errorf("authorize: %d %s", resp.StatusCode, body)
	}
	// Nothing of it is in Vault.
	if rec := s.record(t, "graph_app"); rec != nil {
		t.Errorf("Vault holds a record for the application: %v", rec)
	}
}

func TestGrantClientCredentialsRefused(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	counter := h.countTokens(t)
	c := hydraAppClient(t, h)
	c.Secret = "wrong-" + c.Secret
	s := grantSidecar(t, "graph_app", appConnector(counter.URL, c), up.URL)
	for range 3 {
		resp, body, a := getWith(t, s.base+"/api/items", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || a.Error != "token_unavailable" || a.ProviderError != "invalid_client" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if strings.Contains(body, c.Secret) {
			t.Fatalf("the answer shows the client secret: %s", body)
		}
	}
	if n := counter.Count("client_credentials"); n != 1 {
		t.Errorf("3 requests made %d token requests, want 1 (then a backoff)", n)
	}
	if up.Calls() != 0 {
		t.Errorf("the upstream was called without a token")
	}
	_, body, _ := getWith(t, "http://localhost:2999/oauthconn/connectors", nil)
	if !strings.Contains(body, `"token":"error"`) || !strings.Contains(body, `"last_error":"invalid_client"`) {
		t.Errorf("admin status: %s", body)
	}
}

// recorder is an API that records the Authorization headers it received
// and answers 200, or what check says when set.
type recorder struct {
	URL   string
	check func(token string) (string, error)
	mu    sync.Mutex
	seen  []string
}

func newRecorder(t *testing.T) *recorder {
	u := &recorder{}
	u.URL = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.seen = append(u.seen, auth)
		check := u.check
		u.mu.Unlock()
		if check == nil {
			io.WriteString(w, "{}")
			return
		}
		tok, _ := strings.CutPrefix(auth, "Bearer ")
		sub, err := check(tok)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"sub": sub})
	}))
	return u
}

func (u *recorder) last() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return ""
	}
	return u.seen[len(u.seen)-1]
}

func (u *recorder) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *recorder) distinct() map[string]bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := map[string]bool{}
	for _, a := range u.seen {
		m[a] = true
	}
	return m
}

func TestGrantTokenExchangeZitadel(t *testing.T) {
	app := zitadelop.Client{ID: "app", Secret: "app-secret"}
	proxy := zitadelop.Client{ID: "oauthconn", Secret: "proxy-secret"}
	op, err := zitadelop.Start(app, proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	counter, err := hydradev.NewTokenCounter(op.URL)
	if err != nil {
		t.Fatal(err)
	}
	tokenURL := serve(t, counter) + "/oauth/token"
	// The upstream accepts the tokens the OP accepts (its userinfo).
	up := newRecorder(t)
	up.check = op.Subject
	s := grantSidecar(t, "exchanged", fmt.Sprintf("token_url %s\n\t\t\tclient_id %s\n\t\t\tclient_secret %s\n\t\t\tauth_style basic\n\t\t\tgrant token_exchange\n\t\t\tscopes openid profile\n\t\t\taudience https://upstream.example",
		tokenURL, proxy.ID, proxy.Secret), up.URL)
	const exchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"

	// Without the user's token: 401, nothing exchanged.
	resp, body, a := getWith(t, s.base+"/api/me", nil)
	if resp.StatusCode != http.StatusUnauthorized || a.Error != "user_token_required" {
		t.Fatalf("without a user token: %d %s", resp.StatusCode, body)
	}

	userToken, err := op.UserToken(app)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		resp, body, _ := getWith(t, s.base+"/api/me", http.Header{"Authorization": {"Bearer " + userToken}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"sub":"id1"`) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	got, _ := strings.CutPrefix(up.last(), "Bearer ")
	if got == "" || got == userToken {
		t.Fatalf("the upstream received the incoming token, not an exchanged one")
	}
	if sub, err := op.Subject(got); err != nil || sub != "id1" {
		t.Fatalf("the exchanged token is not the user's at the OP: %q %v", sub, err)
	}
	if n := counter.Count(exchangeGrant); n != 1 {
		t.Fatalf("5 requests with one user token made %d exchanges, want 1", n)
	}
	// Another token of the user is another exchange.
	second, err := op.UserToken(app)
	if err != nil {
		t.Fatal(err)
	}
	if resp, body, _ := getWith(t, s.base+"/api/me", http.Header{"Authorization": {"Bearer " + second}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("second token: %d %s", resp.StatusCode, body)
	}
	if n := counter.Count(exchangeGrant); n != 2 {
		t.Fatalf("2 user tokens made %d exchanges, want 2", n)
	}
	// A token the OP never issued: 401 JSON with the OP's code.
	resp, body, a = getWith(t, s.base+"/api/me", http.Header{"Authorization": {"Bearer forged-" + hydradev.RandomHex(8)}})
	if resp.StatusCode != http.StatusUnauthorized || a.Error != "subject_token_rejected" || a.ProviderError != "invalid_request" {
		t.Fatalf("bad subject token: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, "forged-") {
		t.Errorf("the answer repeats the incoming token: %s", body)
	}
}

func TestGrantOnBehalfOfEntraImitation(t *testing.T) {
	entra := imitation.NewEntraOBO("middle-tier-app", "mt-secret")
	t.Cleanup(entra.Close)
	s := grantSidecar(t, "graph_obo", fmt.Sprintf(`provider microsoft
			tenant contoso
			token_url %s
			client_id middle-tier-app
			client_secret mt-secret
			grant on_behalf_of
			scopes https://graph.microsoft.com/User.Read offline_access
			subject {http.request.header.X-User}`, entra.TokenURL("contoso")), entra.URL)

	alice := entra.UserToken("alice@contoso.example", 10*time.Minute)
	for i := range 3 {
		resp, body, _ := getWith(t, s.base+"/api/v1.0/me", http.Header{"Authorization": {"Bearer " + alice}, "X-User": {"alice"}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "alice@contoso.example") {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	reqs := entra.Requests()
	if len(reqs) != 1 {
		t.Fatalf("3 requests with one user token made %d on-behalf-of requests, want 1", len(reqs))
	}
	// The documented request shape ("Middle-tier access token request").
	f := reqs[0]
	for k, v := range map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
		"assertion": alice, "scope": "https://graph.microsoft.com/User.Read offline_access",
		"client_id": "middle-tier-app", "client_secret": "mt-secret"} {
		if f.Get(k) != v {
			t.Errorf("on-behalf-of request: %s = %q, want %q", k, f.Get(k), v)
		}
	}
	// The refresh token Entra returned is alice's connection in Vault.
	rec := s.record(t, "graph_obo/alice")
	if rec == nil || rec["refresh_token"] != "obo-refresh-1" {
		t.Errorf("Vault holds for alice: %v", rec)
	}
	// No subject: nothing exchanged, nothing kept.
	resp, body, a := getWith(t, s.base+"/api/v1.0/me", http.Header{"Authorization": {"Bearer " + alice}})
	if resp.StatusCode != http.StatusBadRequest || a.Error != "subject_required" {
		t.Errorf("without the user: %d %s", resp.StatusCode, body)
	}
	// A token Entra refuses: 401 with invalid_grant.
	resp, body, a = getWith(t, s.base+"/api/v1.0/me", http.Header{"Authorization": {"Bearer not-for-us"}, "X-User": {"mallory"}})
	if resp.StatusCode != http.StatusUnauthorized || a.Error != "subject_token_rejected" || a.ProviderError != "invalid_grant" {
		t.Errorf("refused assertion: %d %s", resp.StatusCode, body)
	}
	if rec := s.record(t, "graph_obo/mallory"); rec != nil {
		t.Errorf("Vault holds a record for a refused user: %v", rec)
	}
}
