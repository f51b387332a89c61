package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// hydra drives the test's Ory Hydra: it registers clients, plays the login
// and consent app that Hydra redirects browsers to (accepting every
// challenge for the user "alice"), and introspects tokens.
type hydra struct {
	testservices.HydraEnv
}

var (
	loginOnce sync.Once
	loginErr  error
)

func newHydra(t *testing.T) *hydra {
	h := &hydra{testservices.Hydra(t)}
	loginOnce.Do(func() { loginErr = h.serveLogin() })
	if loginErr != nil {
		t.Fatalf("serving Hydra's login and consent app: %v", loginErr)
	}
	return h
}

func (h *hydra) serveLogin() error {
	ln, err := net.Listen("tcp", h.LoginAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("login_challenge")
		h.accept(w, r, "login", "login_challenge="+url.QueryEscape(ch), map[string]any{"subject": "alice", "remember": false})
	})
	mux.HandleFunc("/consent", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("consent_challenge")
		var req struct {
			RequestedScope    []string `json:"requested_scope"`
			RequestedAudience []string `json:"requested_access_token_audience"`
		}
		if err := h.admin(http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(ch), nil, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		h.accept(w, r, "consent", "consent_challenge="+url.QueryEscape(ch), map[string]any{
			"grant_scope": req.RequestedScope, "grant_access_token_audience": req.RequestedAudience, "remember": false,
		})
	})
	go http.Serve(ln, mux)
	return nil
}

func (h *hydra) accept(w http.ResponseWriter, _ *http.Request, kind, query string, body map[string]any) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := h.admin(http.MethodPut, "/admin/oauth2/auth/requests/"+kind+"/accept?"+query, body, &out); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Location", out.RedirectTo)
	w.WriteHeader(http.StatusFound)
}

func (h *hydra) admin(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.AdminURL+path, body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("hydra %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type client struct {
	ID, Secret string
}

// createClient registers an OAuth 2.0 client for the authorization code and
// refresh token grants.
func (h *hydra) createClient(t *testing.T, redirectURI, authMethod string) client {
	t.Helper()
	secret := randomHex(16)
	var out struct {
		ClientID string `json:"client_id"`
	}
	err := h.admin(http.MethodPost, "/admin/clients", map[string]any{
		"client_secret":              secret,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"scope":                      "openid offline_access offline",
		"redirect_uris":              []string{redirectURI},
		"token_endpoint_auth_method": authMethod,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	return client{ID: out.ClientID, Secret: secret}
}

// active introspects an access token.
func (h *hydra) active(token string) (bool, error) {
	resp, err := http.PostForm(h.AdminURL+"/admin/oauth2/introspect", url.Values{"token": {token}})
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return false, err
	}
	return out.Active, nil
}

// revoke revokes a token at Hydra (RFC 7009) as the client.
func (h *hydra) revoke(t *testing.T, c client, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.PublicURL+"/oauth2/revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
}

// tokenCounter stands in front of Hydra's token endpoint and counts the
// grants that reach it, by grant type. It forwards everything unchanged.
type tokenCounter struct {
	URL    string
	mu     sync.Mutex
	grants map[string]int
	total  atomic.Int64
}

func (h *hydra) countTokens(t *testing.T) *tokenCounter {
	target, _ := url.Parse(h.PublicURL)
	tc := &tokenCounter{grants: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		tc.mu.Lock()
		tc.grants[form.Get("grant_type")]++
		tc.mu.Unlock()
		tc.total.Add(1)
		r.Body = io.NopCloser(bytes.NewReader(b))
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tc.URL = "http://" + ln.Addr().String()
	return tc
}

func (c *tokenCounter) count(grant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grants[grant]
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
