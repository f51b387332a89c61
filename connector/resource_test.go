package connector

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestResourceIndicator checks that the resource parameter (RFC 8707) is on
// the authorization URL, the code exchange and the refresh.
func TestResourceIndicator(t *testing.T) {
	var forms []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		forms = append(forms, r.PostForm)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "refresh_token": "rt", "expires_in": 60})
	}))
	defer srv.Close()
	const resource = "https://mcp.example.com/mcp"
	c, err := New(Config{Name: "mcp", AuthURL: "https://as.example.com/authorize", TokenURL: srv.URL, ClientID: "c",
		AuthStyle: AuthPost, RedirectURL: "http://localhost/cb", PKCE: true, Resource: resource}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(c.AuthCodeURL("state", "verifier-verifier-verifier-verifier-verifier"))
	if u.Query().Get("resource") != resource {
		t.Fatalf("authorization URL %s has no resource", u)
	}
	if _, err := c.Exchange(context.Background(), "code", "verifier-verifier-verifier-verifier-verifier"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	if len(forms) != 2 {
		t.Fatalf("%d token requests", len(forms))
	}
	for i, grant := range []string{"authorization_code", "refresh_token"} {
		if forms[i].Get("grant_type") != grant || forms[i]["resource"] == nil || forms[i]["resource"][0] != resource || len(forms[i]["resource"]) != 1 {
			t.Fatalf("%s request = %v", grant, forms[i])
		}
	}
}
