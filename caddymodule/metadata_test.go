package caddymodule

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// TestMetadataPlaceholders: the token response's fields name the upstream's
// host and path and fill header_up values; the upstream receives the
// request there, with the right Host, and the metadata shows in the status
// and the admin API.
func TestMetadataPlaceholders(t *testing.T) {
	s := startServer(t, testOptions{
		connector: "metadata api_host tenant\n allowed_hosts 127.0.0.1:*",
		upstream:  "http://{oauthconn.metadata.api_host}/t/{oauthconn.metadata.tenant}",
		proxy:     "header_up X-Tenant {oauthconn.metadata.tenant}\n header_up X-Host \"h={oauthconn.metadata.api_host}\"",
	})
	host := strings.TrimPrefix(s.up.URL, "http://")
	s.as.extra.Store(&map[string]any{"api_host": host, "tenant": "acme 42/x", "ignored": "not kept"})
	s.connect(t, newClient())

	resp, body := newClient().do(t, "GET", s.base+"/demo/items?q=1", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	got := s.up.last(t)
	if got.URI != "/t/acme%2042%2Fx/items?q=1" || got.Host != host {
		t.Errorf("the upstream got %s with Host %s", got.URI, got.Host)
	}
	if got.Header.Get("Authorization") != "Bearer at-1" || got.Header.Get("X-Tenant") != "acme 42/x" || got.Header.Get("X-Host") != "h="+host {
		t.Errorf("the upstream got headers %v", got.Header)
	}

	// After an upstream 401 the refreshed token set's metadata routes
	// the retry.
	resp, body = newClient().do(t, "GET", s.base+"/demo/first-token-refused", nil, "")
	if resp.StatusCode != http.StatusOK || s.up.last(t).URI != "/t/acme%2042%2Fx/first-token-refused" {
		t.Fatalf("retry: %d %s; upstream got %s", resp.StatusCode, body, s.up.last(t).URI)
	}

	want := map[string]string{"api_host": host, "tenant": "acme 42/x"}
	_, body = admin(t, "GET", "/oauthconn/connectors", "")
	var st []connectorStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st) != 1 || fmt.Sprint(st[0].Metadata) != fmt.Sprint(want) {
		t.Errorf("admin status: %s", body)
	}
	resp, body = newClient().do(t, "GET", s.base+"/oauth/connectors", http.Header{"Accept": {"application/json"}}, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"metadata":{"api_host":"`+host+`","tenant":"acme 42/x"}`) {
		t.Errorf("status route: %d %s", resp.StatusCode, body)
	}
}

// TestMetadataUpstreamNotAllowed: a token response naming a host outside
// allowed_hosts, or plain http on a host that is not loopback, gets 502
// upstream_not_allowed, and nothing reaches that host.
func TestMetadataUpstreamNotAllowed(t *testing.T) {
	var evilCalls atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { evilCalls.Add(1) }))
	defer evil.Close()
	s := startServer(t, testOptions{
		connector: "metadata instance_url\n allowed_hosts localhost:* *.my.example.com",
		upstream:  "{oauthconn.metadata.instance_url}",
	})
	for _, tt := range []struct{ instanceURL, want string }{
		{evil.URL, "is not in the connector's allowed_hosts (*.my.example.com localhost:*)"},
		{"http://acme.my.example.com", "plain http on a host that is not loopback"},
		{"https://acme.my.example.com:8443", "not in the connector's allowed_hosts"},
		{"https://user@acme.my.example.com", "not a URL"},
		{"https://acme.my.example.com/x?y", "not a URL"},
		{"https://acme.my.example.com/a/../b", ". or .. segment"},
		{"acme.my.example.com", "not a URL"},
	} {
		s.as.extra.Store(&map[string]any{"instance_url": tt.instanceURL})
		s.connect(t, newClient())
		resp, body := newClient().do(t, "GET", s.base+"/demo/items", nil, "")
		var e apiError
		json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != http.StatusBadGateway || e.Error != "upstream_not_allowed" || !strings.Contains(e.Message, tt.want) {
			t.Errorf("%s: %d %s", tt.instanceURL, resp.StatusCode, body)
		}
		if strings.Contains(body, "at-") {
			t.Errorf("%s: a token in the answer: %s", tt.instanceURL, body)
		}
	}
	if n := evilCalls.Load(); n != 0 || s.up.calls() != 0 {
		t.Fatalf("the refused hosts got %d requests, the upstream %d", n, s.up.calls())
	}

	// A connection stored without the metadata its upstream needs.
	s.as.extra.Store(&map[string]any{})
	if status, body := admin(t, "POST", "/oauthconn/connectors/demo/import", `{"refresh_token":"rt-x"}`); status != 200 {
		t.Fatalf("import: %d %s", status, body)
	}
	resp, body := newClient().do(t, "GET", s.base+"/demo/items", nil, "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"error":"metadata_missing"`) {
		t.Fatalf("without metadata: %d %s", resp.StatusCode, body)
	}
}

// TestMetadataInstanceURLOverTLS: an upstream that is wholly a metadata
// URL (as Salesforce's instance_url) is reached over TLS, with the host's
// name as Host.
func TestMetadataInstanceURLOverTLS(t *testing.T) {
	var got atomic.Pointer[http.Request]
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r)
		w.Write([]byte("ok"))
	}))
	defer api.Close()
	pool := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600)
	s := startServer(t, testOptions{
		connector: "metadata instance_url\n allowed_hosts 127.0.0.1:* localhost:*",
		upstream:  "{oauthconn.metadata.instance_url}",
		proxy:     "transport http {\n tls_trust_pool file " + pool + "\n }",
	})
	// Both schemes through one proxy: https, then a loopback http host.
	for _, tt := range []struct{ instanceURL, uri string }{
		{api.URL + "/services", "/services/data/v60.0"},
		{s.up.URL, "/data/v60.0"},
	} {
		s.as.extra.Store(&map[string]any{"instance_url": tt.instanceURL})
		s.connect(t, newClient())
		resp, body := newClient().do(t, "GET", s.base+"/demo/data/v60.0", nil, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tt.instanceURL, resp.StatusCode, body)
		}
	}
	r := got.Load()
	if r == nil || r.RequestURI != "/services/data/v60.0" || r.Host != strings.TrimPrefix(api.URL, "https://") || r.Header.Get("Authorization") != "Bearer at-1" || r.TLS == nil {
		t.Fatalf("the TLS upstream got %+v", r)
	}
	if u := s.up.last(t); u.URI != "/data/v60.0" || u.Header.Get("Authorization") != "Bearer at-2" {
		t.Fatalf("the http upstream got %+v", u)
	}
}

// TestMetadataDiscoveryAndCallback: metadata from the callback query and
// from the discovery request made with the new access token; a failing
// discovery stores no connection.
func TestMetadataDiscoveryAndCallback(t *testing.T) {
	s := startServer(t, testOptions{
		connector: "callback_metadata realmId\n metadata_discovery UP_URL/oauth/token/accessible-resources cloud_id path\n allowed_hosts 127.0.0.1:*",
		upstream:  "UP_URL/ex/jira/{oauthconn.metadata.cloud_id}",
		proxy:     "header_up X-Realm {oauthconn.metadata.realmId}",
	})
	c := newClient()
	state, _ := s.authorize(t, c)
	resp, body := c.do(t, "GET", s.base+"/oauth/callback?state="+state+"&code=c1&realmId=4620816365", nil, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	if d := s.up.last(t); d.Path != "/oauth/token/accessible-resources" || d.Header.Get("Authorization") != "Bearer at-1" {
		t.Fatalf("the discovery request: %+v", d)
	}
	resp, body = newClient().do(t, "GET", s.base+"/demo/rest/api/3/myself", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// The discovered value lands in one escaped path segment.
	if u := s.up.last(t); u.URI != "/ex/jira/%2Foauth%2Ftoken%2Faccessible-resources/rest/api/3/myself" || u.Header.Get("X-Realm") != "4620816365" {
		t.Fatalf("the upstream got %s, X-Realm %q", u.URI, u.Header.Get("X-Realm"))
	}

	s = startServer(t, testOptions{
		connector: "metadata_discovery http://127.0.0.1:1/accessible-resources cloud_id 0.id\n allowed_hosts 127.0.0.1:*",
		upstream:  "UP_URL/ex/jira/{oauthconn.metadata.cloud_id}",
	})
	state, _ = s.authorize(t, c)
	resp, body = s.callback(t, c, state, "c2")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "start the connection again") {
		t.Fatalf("failed discovery: %d %s", resp.StatusCode, body)
	}
	if st, _ := admin(t, "GET", "/oauthconn/connectors", ""); st != 200 {
		t.Fatal(st)
	}
	if _, body := admin(t, "GET", "/oauthconn/connectors", ""); !strings.Contains(body, `"status":"authorization_required"`) {
		t.Fatalf("a connection was stored: %s", body)
	}
}

// TestMetadataProvisioningErrors: an upstream or header that depends on
// metadata is checked at load.
func TestMetadataProvisioningErrors(t *testing.T) {
	for _, tt := range []struct{ connector, upstream, proxy, want string }{
		{"metadata instance_url", "{oauthconn.metadata.instance_url}", "", "allowed_hosts on connector demo"},
		{"allowed_hosts x.example.com", "{oauthconn.metadata.instance_url}", "", "keeps no metadata of that name"},
		{"metadata a\n allowed_hosts x.example.com", "https://x.example.com/{oauthconn.metadata.b}", "", "keeps no metadata"},
		{"metadata a", "UP_URL", "header_up X-A {oauthconn.metadata.b}", "header_up uses {oauthconn.metadata.b}"},
		{"metadata a\n allowed_hosts x.example.com", "https://y.example.com/{oauthconn.metadata.a}", "", "y.example.com is not in the connector's allowed_hosts"},
		{"metadata a\n allowed_hosts x.example.com", "http://x.example.com/{oauthconn.metadata.a}", "", "plain http"},
		{"metadata a\n allowed_hosts x.example.com", "https://{oauthconn.metadata.a}/{http.request.host}", "", "no placeholder but"},
		{"metadata a\n allowed_hosts {env.OAUTHCONN_TEST_UNSET_HOSTS}", "https://{oauthconn.metadata.a}", "", "allowed_hosts on connector demo"},
	} {
		src := fmt.Sprintf(testCaddyfile, "", "http://127.0.0.1:1", t.TempDir(), "", "http://127.0.0.1:1", tt.connector,
			freePort(t), "", strings.ReplaceAll(tt.upstream, "UP_URL", "http://127.0.0.1:2"), tt.proxy)
		err := load(src)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s / %s / %s: %v, want %q", tt.connector, tt.upstream, tt.proxy, err, tt.want)
		}
	}
}

// TestResolveMetadataUpstream: the resolution rules, without a server.
func TestResolveMetadataUpstream(t *testing.T) {
	allowed := []connector.HostPattern{}
	for _, p := range []string{"*.my.salesforce.com", "api.atlassian.com", "127.0.0.1:*"} {
		hp, err := connector.ParseHostPattern(p)
		if err != nil {
			t.Fatal(err)
		}
		allowed = append(allowed, hp)
	}
	c := &Connector{name: "c", allowed: allowed, metadata: map[string]bool{"instance_url": true, "cloud_id": true}}
	for _, tt := range []struct {
		template string
		md       map[string]string
		dial     string
		prefix   string
		raw      string
		err      string
	}{
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "https://acme.my.salesforce.com"}, "acme.my.salesforce.com:443", "", "", ""},
		{"{oauthconn.metadata.instance_url}/services/data", map[string]string{"instance_url": "https://acme.my.salesforce.com/"}, "acme.my.salesforce.com:443", "/services/data", "/services/data", ""},
		{"{oauthconn.metadata.instance_url}/services", map[string]string{"instance_url": "https://acme.my.salesforce.com"}, "acme.my.salesforce.com:443", "/services", "/services", ""},
		{"https://api.atlassian.com/ex/jira/{oauthconn.metadata.cloud_id}", map[string]string{"cloud_id": "1a2b-3c"}, "api.atlassian.com:443", "/ex/jira/1a2b-3c", "/ex/jira/1a2b-3c", ""},
		{"https://api.atlassian.com/ex/jira/{oauthconn.metadata.cloud_id}", map[string]string{"cloud_id": "a/../../admin"}, "", "", "", ". or .."}, // refused even escaped: servers may decode %2F
		{"https://api.atlassian.com/ex/jira/{oauthconn.metadata.cloud_id}", map[string]string{"cloud_id": ".."}, "", "", "", ". or .."},
		{"https://api.atlassian.com/ex/jira/{oauthconn.metadata.cloud_id}", map[string]string{"cloud_id": "x?admin=1#f"}, "api.atlassian.com:443", "/ex/jira/x?admin=1#f", "/ex/jira/x%3Fadmin=1%23f", ""},
		{"https://api.atlassian.com/ex/jira/{oauthconn.metadata.cloud_id}", nil, "", "", "", "no metadata \"cloud_id\""},
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "https://acme.my.salesforce.com.evil.net"}, "", "", "", "not in the connector's allowed_hosts"},
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "https://evil.net#.my.salesforce.com"}, "", "", "", "not a URL"},
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "https://evil.net\\@acme.my.salesforce.com"}, "", "", "", "not"},
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "https://127.0.0.1:9"}, "127.0.0.1:9", "", "", ""},
		{"{oauthconn.metadata.instance_url}", map[string]string{"instance_url": "http://127.0.0.1:9/x"}, "127.0.0.1:9", "/x", "/x", ""},
	} {
		m, err := parseMetadataUpstream(c, tt.template)
		if err != nil {
			t.Fatalf("%s: %v", tt.template, err)
		}
		to, err := m.resolve(tokens.NewMetadata(tt.md))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s with %v: %+v, %v; want an error with %q", tt.template, tt.md, to, err, tt.err)
			}
			continue
		}
		if err != nil || to.dial != tt.dial || to.prefix != tt.prefix || to.rawPrefix != tt.raw {
			t.Errorf("%s with %v: %+v, %v", tt.template, tt.md, to, err)
		}
	}
}

// TestMetadataCaddyfileLoads: the adapt test's Caddyfile (unconfigured
// connectors with metadata upstreams) loads; bad settings given in JSON are
// refused at load as in the Caddyfile.
func TestMetadataCaddyfileLoads(t *testing.T) {
	b, err := os.ReadFile("testdata/adapt/metadata.caddyfile.txt")
	if err != nil {
		t.Fatal(err)
	}
	src, _, _ := strings.Cut(string(b), "\n----------\n")
	if err := load(src); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JIRA_CLIENT_ID", "jira-client")
	if err := load(src); err != nil {
		t.Fatalf("configured: %v", err)
	}
	for _, tt := range []struct{ edit, want string }{
		{`"metadata_discovery": {"url": "http://api.example.com/r", "pick": {"cloud_id": "0.id"}}`, "discovery URL must be an absolute https URL"},
		{`"metadata": ["id_token"]`, "names a secret"},
		{`"allowed_hosts": ["*.*"]`, "two other labels"},
	} {
		cfg := `{"apps": {"oauthconn": {"public_url": "http://localhost:8080", "connectors": {"a": {"client_id": "x",
			"authorization_url": "https://as/a", "token_url": "https://as/t", ` + tt.edit + `}}}}}`
		var c caddy.Config
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			t.Fatal(err)
		}
		if err := caddy.Validate(&c); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.edit, err, tt.want)
		}
	}
}

// TestReadmeMetadataExample loads the README's connection metadata example
// as printed, unconfigured and configured.
func TestReadmeMetadataExample(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "## Connection metadata\n")
	_, block, ok2 := strings.Cut(section, "```caddyfile\n")
	src, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 || !strings.Contains(src, "{oauthconn.metadata.cloud_id}") {
		t.Fatal("the README's metadata example is gone; update this test")
	}
	src = strings.Replace(src, "{\n", "{\n\tadmin off\n\tstorage file_system "+t.TempDir()+"\n", 1)
	if err := load(src); err != nil {
		t.Fatalf("unconfigured: %v", err)
	}
	for _, k := range []string{"SF_CLIENT_ID", "SF_CLIENT_SECRET", "JIRA_CLIENT_ID", "JIRA_CLIENT_SECRET"} {
		t.Setenv(k, "x")
	}
	if err := load(src); err != nil {
		t.Fatalf("configured: %v", err)
	}
}

// FuzzResolveMetadataUpstream: whatever a token response says, a resolved
// upstream is on an allowed host and its path has no dot segment.
func FuzzResolveMetadataUpstream(f *testing.F) {
	for _, s := range []string{"https://acme.my.salesforce.com", "https://evil.net#.my.salesforce.com", "a/../b", "http://127.0.0.1:1", "https://x.my.salesforce.com:443/a%2f..%2f"} {
		f.Add(s)
	}
	var allowed []connector.HostPattern
	for _, p := range []string{"*.my.salesforce.com", "api.atlassian.com", "127.0.0.1:*"} {
		hp, _ := connector.ParseHostPattern(p)
		allowed = append(allowed, hp)
	}
	c := &Connector{name: "c", allowed: allowed, metadata: map[string]bool{"v": true}}
	var templates []*metadataUpstream
	for _, tpl := range []string{"{oauthconn.metadata.v}", "{oauthconn.metadata.v}/x", "https://api.atlassian.com/ex/{oauthconn.metadata.v}", "https://{oauthconn.metadata.v}/y"} {
		m, err := parseMetadataUpstream(c, tpl)
		if err != nil {
			f.Fatal(err)
		}
		templates = append(templates, m)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, m := range templates {
			to, err := m.resolve(tokens.NewMetadata(map[string]string{"v": v}))
			if err != nil {
				continue
			}
			scheme := "https"
			if to.plain {
				scheme = "http"
			}
			if !connector.MatchAny(allowed, scheme, to.host) {
				t.Fatalf("%s with %q: %s is not allowed", m.raw, v, to.host)
			}
			for seg := range strings.SplitSeq(to.prefix, "/") {
				if seg == "." || seg == ".." {
					t.Fatalf("%s with %q: prefix %q", m.raw, v, to.prefix)
				}
			}
		}
	})
}
