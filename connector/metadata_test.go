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
	"time"

	"golang.org/x/oauth2"
)

func metadataConfig() Config {
	return Config{Name: "c", ClientID: "id", AuthURL: "https://as/a", TokenURL: "https://as/t",
		RedirectURL: "https://me/cb", AuthStyle: AuthBasic}
}

func TestValidMetadataName(t *testing.T) {
	for name, ok := range map[string]bool{
		"instance_url": true, "realmId": true, "cloud-id": true, "expires_in": true, "token_type": true,
		"": false, "a.b": false, "a b": false, "{x}": false, strings.Repeat("a", 65): false,
		"access_token": false, "Refresh_Token": false, "id_token": false, "code": false, "state": false,
		"signed_token": false, "client_secret": false, "app_password": false, "code_verifier": false,
	} {
		if err := ValidMetadataName(name); (err == nil) != ok {
			t.Errorf("ValidMetadataName(%q): %v", name, err)
		}
	}
}

func TestMetadataValue(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want string
		ok   bool
	}{
		{"https://acme.my.salesforce.com", "https://acme.my.salesforce.com", true},
		{float64(1234567890123), "1234567890123", true},
		{1.5, "1.5", true},
		{"", "", false},
		{true, "", false},
		{map[string]any{"a": "b"}, "", false},
		{[]any{"a"}, "", false},
		{nil, "", false},
		{"a\r\nX-Injected: 1", "", false},
		{"a\x00", "", false},
		{"\xff", "", false},
		{strings.Repeat("a", MaxMetadataValue+1), "", false},
		{strings.Repeat("a", MaxMetadataValue), strings.Repeat("a", MaxMetadataValue), true},
	} {
		got, ok := MetadataValue(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("MetadataValue(%v) = %q, %v", tt.in, got, ok)
		}
	}
}

func TestMetadataConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Metadata = []string{"access_token"} }, "names a secret"},
		{func(c *Config) { c.CallbackMetadata = []string{"code"} }, "names a secret"},
		{func(c *Config) { c.Metadata = []string{"x"}; c.CallbackMetadata = []string{"x"} }, "named twice"},
		{func(c *Config) {
			c.Discovery = &Discovery{URL: "http://api.example.com/r", Pick: map[string]string{"x": "0.id"}}
		}, "https"},
		{func(c *Config) { c.Discovery = &Discovery{URL: "https://api.example.com/r"} }, "picks no value"},
		{func(c *Config) {
			c.Discovery = &Discovery{URL: "https://api.example.com/r", Pick: map[string]string{"x": "0..id"}}
		}, "JSON path"},
		{func(c *Config) {
			c.Discovery = &Discovery{URL: "https://api.example.com/r", Pick: map[string]string{"id_token": "0"}}
		}, "names a secret"},
		{func(c *Config) { c.AllowedHosts = []string{"*.com"} }, "two other labels"},
	} {
		cfg := metadataConfig()
		tt.edit(&cfg)
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", cfg, err, tt.want)
		}
	}
	cfg := metadataConfig()
	cfg.Discovery = &Discovery{URL: "http://127.0.0.1:1/r", Pick: map[string]string{"x": "0.id"}}
	if _, err := New(cfg, nil); err != nil {
		t.Errorf("a loopback http discovery URL: %v", err)
	}
}

func TestPickMetadata(t *testing.T) {
	cfg := metadataConfig()
	cfg.Metadata = []string{"instance_url", "org_id", "nested", "absent"}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ot := (&oauth2.Token{AccessToken: "at"}).WithExtra(map[string]any{
		"instance_url": "https://acme.my.salesforce.com", "org_id": float64(42), "nested": map[string]any{"a": "b"},
		"signature": "not asked for",
	})
	got := c.PickMetadata(ot)
	if len(got) != 2 || got["instance_url"] != "https://acme.my.salesforce.com" || got["org_id"] != "42" {
		t.Fatalf("picked %v", got)
	}
	if got := c.PickMetadata(&oauth2.Token{AccessToken: "at"}); got != nil {
		t.Fatalf("a response without fields: %v", got)
	}
	// A form-encoded response (as GitHub's without Accept: JSON).
	form := (&oauth2.Token{}).WithExtra(url.Values{"instance_url": {"https://x.my.salesforce.com"}})
	if got := c.PickMetadata(form); got["instance_url"] != "https://x.my.salesforce.com" {
		t.Fatalf("form: %v", got)
	}

	cfg = metadataConfig()
	cfg.CallbackMetadata = []string{"realmId", "twice"}
	c, _ = New(cfg, nil)
	q, _ := url.ParseQuery("code=c&state=s&realmId=4620816365&twice=1&twice=2")
	if got := c.CallbackMetadata(q); len(got) != 1 || got["realmId"] != "4620816365" {
		t.Fatalf("callback metadata %v", got)
	}
}

// TestDiscoverMetadata: the discovery request carries the new access token
// and its answer's values are picked by path; a failure names neither the
// token nor the body.
func TestDiscoverMetadata(t *testing.T) {
	var auth string
	answer := `[{"id":"11223344-a1b2-3b33-c444-def123456789","name":"acme","url":"https://acme.atlassian.net"}]`
	status := http.StatusOK
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	defer api.Close()
	cfg := metadataConfig()
	cfg.Discovery = &Discovery{URL: api.URL + "/oauth/token/accessible-resources", Pick: map[string]string{"cloud_id": "0.id", "site": "0.url"}}
	cfg.Timeout = 5 * time.Second
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.DiscoverMetadata(context.Background(), "at-secret")
	if err != nil || got["cloud_id"] != "11223344-a1b2-3b33-c444-def123456789" || got["site"] != "https://acme.atlassian.net" || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	if auth != "Bearer at-secret" {
		t.Fatalf("the discovery request carried %q", auth)
	}
	for _, tt := range []struct {
		status int
		answer string
		want   string
	}{
		{http.StatusOK, `[]`, "no string or number at 0.id (for metadata cloud_id)"},
		{http.StatusOK, `{"0":{"id":{"x":1}}}`, "no string or number at 0.id"},
		{http.StatusOK, `not json at-secret`, "not JSON"},
		{http.StatusUnauthorized, `{"error":"at-secret"}`, "answered 401"},
	} {
		status, answer = tt.status, tt.answer
		_, err := c.DiscoverMetadata(context.Background(), "at-secret")
		if err == nil || !errors.Is(err, ErrDiscovery) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "at-secret") {
			t.Errorf("%d %s: %v", tt.status, tt.answer, err)
		}
	}
	if got, err := (&Connector{}).DiscoverMetadata(context.Background(), "at"); got != nil || err != nil {
		t.Fatalf("without discovery: %v %v", got, err)
	}
}

func TestMetadataDefaults(t *testing.T) {
	cfg := Config{Provider: "salesforce"}
	MetadataDefaults(&cfg)
	if len(cfg.AllowedHosts) != 1 || cfg.AllowedHosts[0] != "*.my.salesforce.com" {
		t.Fatalf("salesforce: %v", cfg.AllowedHosts)
	}
	cfg = Config{Provider: "salesforce", AllowedHosts: []string{"acme.my.salesforce.com"}}
	MetadataDefaults(&cfg)
	if len(cfg.AllowedHosts) != 1 || cfg.AllowedHosts[0] != "acme.my.salesforce.com" {
		t.Fatalf("configured hosts replaced: %v", cfg.AllowedHosts)
	}
	cfg = Config{}
	MetadataDefaults(&cfg)
	if len(cfg.AllowedHosts) != 0 {
		t.Fatalf("generic: %v", cfg.AllowedHosts)
	}
	for _, name := range ProviderNames() {
		for _, h := range providers[name].AllowedHosts {
			if _, err := ParseHostPattern(h); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	cfg = Config{Provider: "atlassian"}
	MetadataDefaults(&cfg)
	if cfg.Discovery == nil || cfg.Discovery.Pick["cloud_id"] != "0.id" {
		t.Fatalf("atlassian: no cloud id discovery: %+v", cfg.Discovery)
	}
	cfg = Config{Provider: "salesforce"}
	MetadataDefaults(&cfg)
	if len(cfg.Metadata) != 1 || cfg.Metadata[0] != "instance_url" {
		t.Fatalf("salesforce: metadata %v", cfg.Metadata)
	}
}
