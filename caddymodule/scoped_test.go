package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/imitation"
)

// msServer is Caddy in this process with two microsoft connectors on the
// Entra imitation: graph (CAE on, the preset's default) and plain (cae
// off). The proxy's /graph/* and /sharepoint/* routes are the README's
// (its section "SharePoint and Graph from one connection"), with the
// imitations' URLs for Graph's and SharePoint's: /graph/* with the
// connection's token, /sharepoint/* with a token for
// https://contoso.sharepoint.com/.default. /plain/* is Graph for connector
// plain.
type msServer struct {
	*testServer
	entra      *imitation.Entra
	graph      *imitation.Resource
	sharepoint *imitation.Resource
}

const msCaddyfile = `{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	oauthconn {
		public_url %[2]s
		rate_limit off
		store file {
			path %[1]s/oauthconn
		}
		connector graph {
			provider microsoft
			tenant contoso
			authorization_url %[3]s
			token_url %[4]s
			client_id ms-client
			client_secret ms-secret
		}
		connector plain {
			provider microsoft
			tenant contoso
			authorization_url %[3]s
			token_url %[4]s
			client_id ms-client
			client_secret ms-secret
			cae off
		}
	}
}

%[2]s {
	bind 127.0.0.1
	oauthconn_connect /oauth/*
%[6]s
	handle_path /plain/* {
		oauthconn_proxy plain %[5]s
	}
}
`

func startMicrosoft(t *testing.T) *msServer {
	t.Helper()
	entra := imitation.NewEntra("ms-client", "ms-secret")
	t.Cleanup(entra.Close)
	graph := imitation.NewGraph(entra)
	t.Cleanup(graph.Close)
	sp := imitation.NewSharePoint(entra, "contoso.sharepoint.com")
	t.Cleanup(sp.Close)
	port := freePort(t)
	s := &testServer{addr: fmt.Sprintf("127.0.0.1:%d", port), storeDir: t.TempDir()}
	s.base = "http://" + s.addr
	routes := strings.NewReplacer(
		"oauthconn_proxy graph https://graph.microsoft.com", "oauthconn_proxy graph "+graph.URL,
		"oauthconn_proxy graph https://contoso.sharepoint.com", "oauthconn_proxy graph "+sp.URL,
	).Replace(readmeSharePointRoutes(t))
	s.src = fmt.Sprintf(msCaddyfile, s.storeDir, s.base, entra.AuthorizeURL("contoso"), entra.TokenURL("contoso"), graph.URL, routes)
	s.load(t, s.src)
	return &msServer{testServer: s, entra: entra, graph: graph, sharepoint: sp}
}

// readmeSharePointRoutes returns the proxy routes of the README's example
// of Graph and SharePoint from one connection.
func readmeSharePointRoutes(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(b), "### SharePoint and Graph from one connection")
	_, block, _ := strings.Cut(section, "```caddyfile\n")
	block, _, _ = strings.Cut(block, "\n```")
	start, end := strings.Index(block, "\thandle_path /graph/*"), strings.LastIndex(block, "\n}")
	if start < 0 || end < start || !strings.Contains(block[start:end], "scopes https://contoso.sharepoint.com/.default") {
		t.Fatal("the README's SharePoint example is gone or changed shape; update this test")
	}
	return block[start:end]
}

// connectVia authorizes connector name through the Entra imitation,
// following authorizeURL (the proxy's authorize route, perhaps naming a
// claims challenge), and returns the query of the authorization request
// the imitation received.
func (s *msServer) connectVia(t *testing.T, authorizeURL string) url.Values {
	t.Helper()
	c := newClient()
	resp, body := c.do(t, "GET", authorizeURL, nil, "")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), s.entra.URL) {
		t.Fatalf("authorize: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	n := len(s.entra.Authorizations())
	resp, _ = c.do(t, "GET", resp.Header.Get("Location"), nil, "")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("the Entra imitation's authorize: %d", resp.StatusCode)
	}
	if resp, body = c.do(t, "GET", resp.Header.Get("Location"), nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	return s.entra.Authorizations()[n]
}

// storedRecord reads a connection's record from the test's file store.
func (s *msServer) storedRecord(t *testing.T, path string) map[string]string {
	t.Helper()
	st, err := (&FileStore{Path: s.storeDir + "/oauthconn"}).OpenStore()
	if err != nil {
		t.Fatal(err)
	}
	e, err := st.Get(context.Background(), path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return e.Data
}

// refreshes returns the refresh requests the Entra imitation received for
// scope (empty: the grant's own).
func (s *msServer) refreshes(scope string) []imitation.TokenRequest {
	var out []imitation.TokenRequest
	for _, r := range s.entra.Requests() {
		if r.GrantType == "refresh_token" && r.Scope == scope {
			out = append(out, r)
		}
	}
	return out
}

// TestGraphAndSharePointFromOneConnection: one connection; /graph/* gets
// the connection's Graph token, /sharepoint/* a SharePoint token obtained
// with its refresh token: one refresh for a storm of requests, whose
// rotated refresh token is what the store then holds, and with which the
// connection's own refresh later succeeds (the imitation honours only the
// latest refresh token).
func TestGraphAndSharePointFromOneConnection(t *testing.T) {
	s := startMicrosoft(t)
	s.connectVia(t, s.base+"/oauth/connectors/graph/authorize")
	app := newClient()

	resp, body := app.do(t, "GET", s.base+"/graph/v1.0/me", nil, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Adele Vance") {
		t.Fatalf("/graph/v1.0/me: %d %s", resp.StatusCode, body)
	}
	before := s.storedRecord(t, "tokens/graph")

	var wg sync.WaitGroup
	statuses := make(chan int, 40)
	for range 40 {
		wg.Go(func() {
			resp, _ := newClient().do(t, "GET", s.base+"/sharepoint/_api/web", nil, "")
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Fatalf("/sharepoint/_api/web answered %d", st)
		}
	}
	spRefresh := s.refreshes("https://contoso.sharepoint.com/.default offline_access")
	if len(spRefresh) != 1 || spRefresh[0].RefreshToken != before["refresh_token"] || spRefresh[0].Status != http.StatusOK {
		t.Fatalf("SharePoint refreshes %+v; want one, with the stored refresh token %q", spRefresh, before["refresh_token"])
	}
	if !strings.Contains(spRefresh[0].Claims, `"cp1"`) {
		t.Errorf("the scoped refresh declared no cp1: claims %q", spRefresh[0].Claims)
	}
	for _, r := range s.sharepoint.Requests() {
		if r.Audience != "https://contoso.sharepoint.com" {
			t.Fatalf("SharePoint received a token for %q", r.Audience)
		}
	}
	for _, r := range s.graph.Requests() {
		if r.Audience != "https://graph.microsoft.com" {
			t.Fatalf("Graph received a token for %q", r.Audience)
		}
	}

	// The store holds the rotated refresh token and the connection's own
	// access token, unchanged.
	after := s.storedRecord(t, "tokens/graph")
	if after["refresh_token"] == before["refresh_token"] || after["access_token"] != before["access_token"] ||
		after["generation"] != before["generation"] || after["lease_holder"] != "" {
		t.Fatalf("store before %v, after %v; want a rotated refresh token, the same access token and grant, no lease", before, after)
	}
	if a, ok := s.entra.Lookup(before["access_token"]); !ok || a.Audience != "https://graph.microsoft.com" {
		t.Fatalf("the stored access token is for %q", a.Audience)
	}

	// Graph keeps working with the connection's token; once Graph refuses
	// it, the connection refreshes with the rotated refresh token.
	if resp, body = app.do(t, "GET", s.base+"/graph/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/graph after the scoped refresh: %d %s", resp.StatusCode, body)
	}
	if n := len(s.refreshes("")); n != 0 {
		t.Fatalf("%d refreshes of the connection's own token before Graph refused it", n)
	}
	s.graph.Expire()
	if resp, body = app.do(t, "GET", s.base+"/graph/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/graph after Graph refused the token: %d %s", resp.StatusCode, body)
	}
	own := s.refreshes("")
	if len(own) != 1 || own[0].RefreshToken != after["refresh_token"] || own[0].Status != http.StatusOK {
		t.Fatalf("the connection's refreshes %+v; want one with the rotated %q", own, after["refresh_token"])
	}
	// SharePoint's token is still cached: no further scoped refresh.
	if resp, _ = app.do(t, "GET", s.base+"/sharepoint/_api/web", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/sharepoint after: %d", resp.StatusCode)
	}
	if n := len(s.refreshes("https://contoso.sharepoint.com/.default offline_access")); n != 1 {
		t.Fatalf("%d SharePoint refreshes; want still one", n)
	}
}

// TestScopedRefusalNeedsAuthorization: a provider refusing the refresh
// token for SharePoint's scopes (no consent) answers the SharePoint route
// with 401 authorization_required, while Graph keeps working and the
// connection keeps its grant.
func TestScopedRefusalNeedsAuthorization(t *testing.T) {
	s := startMicrosoft(t)
	s.connectVia(t, s.base+"/oauth/connectors/graph/authorize")
	s.entra.Deny("https://contoso.sharepoint.com")
	app := newClient()
	for range 3 {
		resp, body := app.do(t, "GET", s.base+"/sharepoint/_api/web", nil, "")
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"authorization_required"`) {
			t.Fatalf("/sharepoint: %d %s", resp.StatusCode, body)
		}
	}
	if n := len(s.refreshes("https://contoso.sharepoint.com/.default offline_access")); n != 1 {
		t.Fatalf("%d SharePoint refreshes; want one, then a pause", n)
	}
	if len(s.sharepoint.Requests()) != 0 {
		t.Fatal("a request reached SharePoint without a token for it")
	}
	if resp, body := app.do(t, "GET", s.base+"/graph/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/graph: %d %s", resp.StatusCode, body)
	}
	if rec := s.storedRecord(t, "tokens/graph"); rec["state"] != "" || rec["refresh_token"] == "" {
		t.Fatalf("the connection's record: %v", rec)
	}
}

// TestProxyScopesOptionErrors: bad scopes are refused when loading.
func TestProxyScopesOptionErrors(t *testing.T) {
	site := func(sub string) string {
		return "{\n\toauthconn {\npublic_url http://localhost:8080\n" + demoConnector + "\n\t}\n}\n" +
			"http://localhost:8080 {\n\toauthconn_proxy demo https://api.example.com {\n\t\t" + sub + "\n\t}\n}\n"
	}
	if _, err := adapt(site("scopes")); err == nil || !strings.Contains(err.Error(), "scopes takes one or more scopes") {
		t.Fatalf("scopes without arguments: %v", err)
	}
	if err := load(site("scopes {env.OAUTHCONN_TEST_UNSET}")); err == nil || !strings.Contains(err.Error(), "oauthconn_proxy demo: a scope is empty") {
		t.Fatalf("empty scope: %v", err)
	}
	if err := load(site(`scopes "a b"`)); err == nil || !strings.Contains(err.Error(), `scope "a b" contains a space`) {
		t.Fatalf("scope with a space: %v", err)
	}
	if err := load(site("scopes https://contoso.sharepoint.com/.default")); err != nil {
		t.Fatalf("valid scopes: %v", err)
	}
}
