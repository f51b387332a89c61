package caddymodule

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestReadmeProtectedMatcher loads the README's example that protects every
// connect route but the probes, as printed, and checks who gets through.
func TestReadmeProtectedMatcher(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "@protected {")
	end := strings.Index(readme[max(start, 0):], "oauthconn_connect /oauth/*")
	if start < 0 || end < 0 {
		t.Fatal("the README's @protected example is gone; update this test")
	}
	snippet := readme[start : start+end]
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	snippet = strings.Replace(snippet, "$2a$14$...", string(hash), 1)
	s := startServer(t, testOptions{site: snippet})
	c := newClient()
	for path, want := range map[string]int{"/oauth/livez": 200, "/oauth/readyz": 200, "/oauth/": 401, "/oauth/connectors": 401, "/oauth/connectors/demo/authorize": 401, "/oauth/callback": 401} {
		if resp, _ := c.do(t, "GET", s.base+path, nil, ""); resp.StatusCode != want {
			t.Errorf("GET %s without credentials: %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", s.base+"/oauth/connectors", nil)
	req.SetBasicAuth("admin", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /oauth/connectors as admin: %d", resp.StatusCode)
	}
}
