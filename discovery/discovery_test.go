package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// site serves the documents of a resource and its authorization server on
// one loopback host; the handlers say what each well-known location holds.
type site struct {
	*httptest.Server
	docs map[string]any
	hits []string
}

func newSite(t *testing.T) *site {
	s := &site{docs: map[string]any{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits = append(s.hits, r.URL.Path)
		if r.URL.Path == "/mcp" {
			w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="`+s.URL+`/meta/custom", error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
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

func (s *site) server(issuer string) map[string]any {
	return map[string]any{
		"issuer":                           issuer,
		"authorization_endpoint":           issuer + "/authorize",
		"token_endpoint":                   issuer + "/token",
		"registration_endpoint":            issuer + "/register",
		"response_types_supported":         []string{"code"},
		"code_challenge_methods_supported": []string{"S256"},
	}
}

func TestDiscoverFollowsTheChallenge(t *testing.T) {
	s := newSite(t)
	resource := s.URL + "/mcp"
	s.docs["/meta/custom"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL + "/as"}, "scopes_supported": []string{"read"}}
	s.docs["/.well-known/oauth-authorization-server/as"] = s.server(s.URL + "/as")
	res, err := Discover(context.Background(), s.Client(), resource, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.ResourceMetadataURL != s.URL+"/meta/custom" || res.TokenURL != s.URL+"/as/token" || res.RegistrationURL != s.URL+"/as/register" {
		t.Fatalf("result = %+v", res)
	}
	if len(res.ScopesSupported) != 1 || res.ScopesSupported[0] != "read" {
		t.Fatalf("scopes = %v", res.ScopesSupported)
	}
}

func TestDiscoverWellKnownOrder(t *testing.T) {
	s := newSite(t)
	resource := s.URL + "/api/v1"
	// No challenge (the resource answers 404): the path-inserted
	// location first, then the root.
	s.docs["/.well-known/oauth-protected-resource"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL}}
	s.docs["/.well-known/openid-configuration"] = s.server(s.URL)
	res, err := Discover(context.Background(), s.Client(), resource, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/api/v1", "/.well-known/oauth-protected-resource/api/v1", "/.well-known/oauth-protected-resource",
		"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"}
	if strings.Join(s.hits, " ") != strings.Join(want, " ") {
		t.Fatalf("looked at %v, want %v", s.hits, want)
	}
	if res.AuthURL != s.URL+"/authorize" {
		t.Fatalf("auth URL = %s", res.AuthURL)
	}
}

func TestDiscoverRefusals(t *testing.T) {
	cases := []struct {
		name string
		set  func(s *site, resource string)
		want string
	}{
		{"another resource", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": s.URL + "/other", "authorization_servers": []string{s.URL}}
		}, "is for another resource"},
		{"issuer mismatch", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL}}
			s.docs["/.well-known/oauth-authorization-server"] = s.server("https://evil.example")
		}, "names another issuer"},
		{"http endpoint", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL}}
			as := s.server(s.URL)
			as["token_endpoint"] = "http://tokens.example.com/token"
			s.docs["/.well-known/oauth-authorization-server"] = as
		}, "token_endpoint is not https"},
		{"no S256", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL}}
			as := s.server(s.URL)
			as["code_challenge_methods_supported"] = []string{"plain"}
			s.docs["/.well-known/oauth-authorization-server"] = as
		}, "does not support PKCE S256"},
		{"no PKCE at all", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": resource, "authorization_servers": []string{s.URL}}
			as := s.server(s.URL)
			delete(as, "code_challenge_methods_supported")
			s.docs["/.well-known/oauth-authorization-server"] = as
		}, "does not support PKCE S256"},
		{"no authorization server", func(s *site, resource string) {
			s.docs["/meta/custom"] = map[string]any{"resource": resource}
		}, "names no authorization server"},
		{"no metadata", func(s *site, resource string) {}, "no protected resource metadata found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			resource := s.URL + "/mcp"
			tc.set(s, resource)
			_, err := Discover(context.Background(), s.Client(), resource, "")
			if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDiscoverRefusesPlainHTTPResource(t *testing.T) {
	_, err := Discover(context.Background(), http.DefaultClient, "http://mcp.example.com/mcp", "")
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseChallenge(t *testing.T) {
	h := http.Header{}
	h.Add("WWW-Authenticate", `Basic realm="x", Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"`)
	c := ParseChallenge(h)
	if c.Error != "insufficient_scope" || c.Scope != "files:read files:write" || c.ResourceMetadata != "https://mcp.example.com/.well-known/oauth-protected-resource" {
		t.Fatalf("challenge = %+v", c)
	}
	if (ParseChallenge(http.Header{}) != Challenge{}) {
		t.Fatal("no header: want the zero challenge")
	}
}

func TestParseChallengeForms(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   Challenge
	}{
		{[]string{`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJ9"`},
			Challenge{Error: "insufficient_claims", Claims: "eyJ9"}},
		{[]string{`Bearer error=insufficient_scope, scope="a b"`}, Challenge{Error: "insufficient_scope", Scope: "a b"}},
		{[]string{`Basic realm="x"`, `bearer Error="invalid_token",Resource_Metadata="https://r.example/m"`}, Challenge{Error: "invalid_token", ResourceMetadata: "https://r.example/m"}},
		{[]string{`Negotiate abc==, Bearer realm="a\"b", error="e"`}, Challenge{Error: "e"}},
		{[]string{`Bearer`}, Challenge{}},
		{[]string{`Bearer error="unterminated`}, Challenge{Error: "unterminated"}},
	} {
		h := http.Header{}
		for _, v := range tc.header {
			h.Add("WWW-Authenticate", v)
		}
		if got := ParseChallenge(h); got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.header, got, tc.want)
		}
	}
}
