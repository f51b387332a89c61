package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// resourceSite is a self-describing resource and its authorization
// server's metadata on one loopback host, the token endpoint being the
// test's fakeAS: docs maps each path to the JSON served there.
type resourceSite struct {
	*httptest.Server
	mu          sync.Mutex
	docs        map[string]any
	registered  int
	seen        []*http.Request
	registerErr bool
	// moved makes /mcp refuse every token with a challenge naming other
	// metadata.
	moved   bool
	fetched map[string]int
	// insufficient, if set, is the scope /mcp asks for with 403
	// insufficient_scope (status: 401 if unauthorized is set).
	insufficient string
	unauthorized bool
}

func newResourceSite(t *testing.T) *resourceSite {
	s := &resourceSite{docs: map[string]any{}, fetched: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch r.URL.Path {
		case "/register":
			if s.registerErr {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client_metadata", "error_description": "no"})
				return
			}
			s.registered++
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]any{"client_id": "registered-client", "client_secret": "registered-secret", "token_endpoint_auth_method": "client_secret_basic"})
			return
		case "/mcp", "/mcp/tools":
			s.seen = append(s.seen, r.Clone(r.Context()))
			if s.insufficient != "" {
				w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+s.insufficient+`", resource_metadata="`+s.URL+`/.well-known/oauth-protected-resource/mcp"`)
				if s.unauthorized {
					w.WriteHeader(http.StatusUnauthorized)
				} else {
					w.WriteHeader(http.StatusForbidden)
				}
				return
			}
			if s.moved {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", resource_metadata="`+s.URL+`/meta/v2"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if r.Header.Get("Authorization") == "" {
				w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="`+s.URL+`/.well-known/oauth-protected-resource/mcp"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte(`{"ok":true}`))
			return
		}
		s.fetched[r.URL.Path]++
		doc, ok := s.docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve publishes a resource metadata document for /mcp naming this site
// as the authorization server, and the server's metadata with the token
// endpoint at tokenBase.
func (s *resourceSite) serve(tokenBase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs["/.well-known/oauth-protected-resource/mcp"] = map[string]any{
		"resource": s.URL + "/mcp", "authorization_servers": []string{s.URL}, "scopes_supported": []string{"tools"}}
	s.docs["/.well-known/oauth-authorization-server"] = map[string]any{
		"issuer": s.URL, "authorization_endpoint": s.URL + "/authorize", "token_endpoint": tokenBase + "/token",
		"registration_endpoint": s.URL + "/register", "response_types_supported": []string{"code"},
		"code_challenge_methods_supported": []string{"S256"}, "client_id_metadata_document_supported": true}
}

func startResourceServer(t *testing.T, site *resourceSite, registration string) *testServer {
	return startServer(t, testOptions{
		app:  "connector mcp {\n\t\t\tresource " + site.URL + "/mcp\n\t\t\tregistration " + registration + "\n\t\t}",
		site: "handle_path /mcp/* {\n\t\toauthconn_proxy mcp\n\t}",
	})
}

// TestResourceConnector connects a connector configured with nothing but
// its resource: the authorization server is discovered on first use, one
// client is registered, the resource indicator is on the authorization
// URL, and the proxy sends "/" to the resource URL itself.
func TestResourceConnector(t *testing.T) {
	site := newResourceSite(t)
	s := startResourceServer(t, site, "dynamic")
	site.serve(s.as.URL)
	if site.registered != 0 {
		t.Fatal("registered at provisioning")
	}
	c := newClient()
	resp, body := c.do(t, "GET", s.base+"/oauth/connectors/mcp/authorize", nil, "")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if loc.Host != strings.TrimPrefix(site.URL, "http://") || q.Get("client_id") != "registered-client" ||
		q.Get("resource") != site.URL+"/mcp" || q.Get("code_challenge_method") != "S256" || q.Get("scope") != "tools" {
		t.Fatalf("authorization URL = %s", loc)
	}
	if resp, body := s.callback(t, c, q.Get("state"), "code-1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	app := newClient()
	for _, p := range []string{"/mcp/", "/mcp/tools"} {
		if resp, body := app.do(t, "POST", s.base+p, nil, `{}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	site.mu.Lock()
	defer site.mu.Unlock()
	if site.registered != 1 {
		t.Fatalf("%d registrations, want 1", site.registered)
	}
	// Discovery asked the resource once for its challenge, without
	// credentials; then the proxied requests came with the token.
	if len(site.seen) != 3 || site.seen[0].Header.Get("Authorization") != "" {
		t.Fatalf("the resource saw %d requests", len(site.seen))
	}
	if site.seen[1].URL.Path != "/mcp" || site.seen[2].URL.Path != "/mcp/tools" ||
		!strings.HasPrefix(site.seen[1].Header.Get("Authorization"), "Bearer at-") {
		t.Fatalf("the resource saw %s and %s, %q", site.seen[1].URL.Path, site.seen[2].URL.Path, site.seen[1].Header.Get("Authorization"))
	}
}

// TestResourceDiscoveryRefused has the resource's metadata name another
// resource: authorize and the proxy answer 502 discovery_failed saying so,
// and nothing is stored.
func TestResourceDiscoveryRefused(t *testing.T) {
	site := newResourceSite(t)
	s := startResourceServer(t, site, "dynamic")
	site.serve(s.as.URL)
	site.mu.Lock()
	site.docs["/.well-known/oauth-protected-resource/mcp"] = map[string]any{"resource": "https://elsewhere.example/mcp", "authorization_servers": []string{site.URL}}
	site.mu.Unlock()
	c := newClient()
	hdr := http.Header{"Content-Type": {"application/json"}, "Origin": {s.base}}
	resp, body := c.do(t, "POST", s.base+"/oauth/connectors/mcp/authorize", hdr, `{}`)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"discovery_failed"`) || !strings.Contains(body, "is for another resource") {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
	resp, body = c.do(t, "GET", s.base+"/oauth/connectors/mcp/authorize", nil, "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "is for another resource") {
		t.Fatalf("authorize page: %d %s", resp.StatusCode, body)
	}
	resp, body = newClient().do(t, "GET", s.base+"/mcp/", nil, "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"discovery_failed"`) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("proxy: %d %s", resp.StatusCode, body)
	}
	for _, dir := range []string{"discovery", "clients", "flows"} {
		if entries, _ := os.ReadDir(filepath.Join(s.storeDir, "oauthconn", dir)); len(entries) > 0 {
			t.Fatalf("%s holds %d records after a refused discovery", dir, len(entries))
		}
	}
	if site.registered != 0 {
		t.Fatal("registered despite the refusal")
	}
}

// TestResourceRegistrationRefused has the registration endpoint refuse:
// the error names its code, and nothing is stored but the released lease.
func TestResourceRegistrationRefused(t *testing.T) {
	site := newResourceSite(t)
	s := startResourceServer(t, site, "dynamic")
	site.serve(s.as.URL)
	site.registerErr = true
	hdr := http.Header{"Content-Type": {"application/json"}, "Origin": {s.base}}
	resp, body := newClient().do(t, "POST", s.base+"/oauth/connectors/mcp/authorize", hdr, `{}`)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "invalid_client_metadata") || strings.Contains(body, "registered-secret") {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
}

// TestClientMetadataDocument serves the client ID metadata document of a
// metadata_document connector, whose URL is its client_id.
func TestClientMetadataDocument(t *testing.T) {
	site := newResourceSite(t)
	s := startResourceServer(t, site, "metadata_document")
	site.serve(s.as.URL)
	resp, body := newClient().do(t, "GET", s.base+"/oauth/clients/mcp", nil, "")
	var doc map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("document: %d %s", resp.StatusCode, body)
	}
	if doc["client_id"] != s.base+"/oauth/clients/mcp" || doc["token_endpoint_auth_method"] != "none" {
		t.Fatalf("document = %s", body)
	}
	if redirect := doc["redirect_uris"].([]any); len(redirect) != 1 || redirect[0] != s.base+"/oauth/callback" {
		t.Fatalf("redirect_uris = %v", redirect)
	}
	resp, _ = newClient().do(t, "GET", s.base+"/oauth/connectors/mcp/authorize", nil, "")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("client_id") != s.base+"/oauth/clients/mcp" {
		t.Fatalf("authorize: %d %s", resp.StatusCode, loc)
	}
	if resp, _ := newClient().do(t, "GET", s.base+"/oauth/clients/demo", nil, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a connector without a document: %d", resp.StatusCode)
	}
}

func TestResourceConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, connector, want string }{
		{"token_url", "resource https://mcp.example.com/mcp\ntoken_url https://as.example.com/token", "token_url is discovered from the resource"},
		{"dynamic with client_id", "resource https://mcp.example.com/mcp\nregistration dynamic\nclient_id x", "come from registration dynamic"},
		{"static without client_id", "resource https://mcp.example.com/mcp\nregistration static", "registration static needs client_id"},
		{"plain http", "resource http://mcp.example.com/mcp", "must be https"},
		{"query", "resource https://mcp.example.com/mcp?x=1", "no query"},
		{"pkce off", "resource https://mcp.example.com/mcp\npkce off", "always uses PKCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "{\n\tadmin off\n\toauthconn {\n\t\tpublic_url http://localhost:8080\n\t\tstore file {\n\t\t\tpath " + t.TempDir() + "\n\t\t}\n\t\tconnector mcp {\n" + tc.connector + "\n}\n\t}\n}\n"
			err := load(src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestResourceRediscoveredOnNewChallenge has the resource answer 401 with
// a challenge naming other metadata: the next request discovers again from
// that URL.
func TestResourceRediscoveredOnNewChallenge(t *testing.T) {
	site := newResourceSite(t)
	s := startResourceServer(t, site, "dynamic")
	site.serve(s.as.URL)
	c := newClient()
	resp, _ := c.do(t, "GET", s.base+"/oauth/connectors/mcp/authorize", nil, "")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp, body := s.callback(t, c, loc.Query().Get("state"), "code-1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	site.mu.Lock()
	site.moved = true
	site.docs["/meta/v2"] = site.docs["/.well-known/oauth-protected-resource/mcp"]
	site.mu.Unlock()
	newClient().do(t, "GET", s.base+"/mcp/", nil, "")
	site.mu.Lock()
	site.moved = false
	site.mu.Unlock()
	if resp, body := newClient().do(t, "GET", s.base+"/mcp/", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the new challenge: %d %s", resp.StatusCode, body)
	}
	site.mu.Lock()
	defer site.mu.Unlock()
	if site.fetched["/meta/v2"] != 1 {
		t.Fatalf("the metadata the 401 named was fetched %d times, want 1", site.fetched["/meta/v2"])
	}
	if site.registered != 1 {
		t.Fatalf("%d registrations, want 1 (the same server)", site.registered)
	}
}

// TestResourceStepUp has the resource refuse the token for lacking scope
// (RFC 6750 insufficient_scope, with 403 and with 401): the app gets 401
// authorization_required with the scopes asked for and an authorize URL
// that requests them besides the connector's own, and no refresh is tried.
func TestResourceStepUp(t *testing.T) {
	for _, unauthorized := range []bool{false, true} {
		t.Run(map[bool]string{false: "403", true: "401"}[unauthorized], func(t *testing.T) {
			site := newResourceSite(t)
			s := startResourceServer(t, site, "dynamic")
			site.serve(s.as.URL)
			c := newClient()
			resp, _ := c.do(t, "GET", s.base+"/oauth/connectors/mcp/authorize", nil, "")
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp, body := s.callback(t, c, loc.Query().Get("state"), "code-1"); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("callback: %d %s", resp.StatusCode, body)
			}
			issued := s.as.n.Load()
			site.mu.Lock()
			site.insufficient, site.unauthorized = "tools admin:write", unauthorized
			site.mu.Unlock()
			resp, body := newClient().do(t, "POST", s.base+"/mcp/", nil, `{}`)
			var got struct {
				Error        string   `json:"error"`
				AuthorizeURL string   `json:"authorize_url"`
				Scopes       []string `json:"scopes"`
			}
			if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(body), &got) != nil || got.Error != "authorization_required" ||
				strings.Join(got.Scopes, " ") != "tools admin:write" || !strings.Contains(got.AuthorizeURL, "?challenge=") {
				t.Fatalf("step-up answer: %d %s", resp.StatusCode, body)
			}
			if s.as.n.Load() != issued {
				t.Fatal("a token was requested for a scope challenge")
			}
			resp, _ = c.do(t, "GET", got.AuthorizeURL, nil, "")
			loc, _ = url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc.Query().Get("scope") != "tools admin:write" {
				t.Fatalf("authorize after step-up: %d, scope %q", resp.StatusCode, loc.Query().Get("scope"))
			}
			// A challenge id the proxy did not issue asks for nothing more.
			resp, _ = c.do(t, "GET", s.base+"/oauth/connectors/mcp/authorize?challenge=0123456789abcdef0123456789abcdef", nil, "")
			loc, _ = url.Parse(resp.Header.Get("Location"))
			if loc.Query().Get("scope") != "tools" {
				t.Fatalf("a forged challenge: scope %q", loc.Query().Get("scope"))
			}
		})
	}
}
