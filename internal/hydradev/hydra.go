// Package hydradev plays the parts around a development Ory Hydra that a
// real deployment has elsewhere: the login and consent app Hydra sends
// browsers to (it accepts every challenge for one user), client
// registration, and an API that accepts only tokens Hydra calls active. The
// end-to-end tests and scripts/demo use it.
package hydradev

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Hydra is a running Ory Hydra.
type Hydra struct {
	// PublicURL serves /oauth2/auth, /oauth2/token and /oauth2/revoke.
	PublicURL string
	// AdminURL serves clients, login and consent acceptance, and
	// introspection.
	AdminURL string
}

// ServeLogin serves Hydra's login and consent endpoints (/login, /consent)
// on addr, logging every browser in as subject and granting every
// requested scope.
func (h Hydra) ServeLogin(addr, subject string) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("login_challenge")
		h.accept(w, "login", "login_challenge="+url.QueryEscape(ch), map[string]any{"subject": subject, "remember": false})
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
		h.accept(w, "consent", "consent_challenge="+url.QueryEscape(ch), map[string]any{
			"grant_scope": req.RequestedScope, "grant_access_token_audience": req.RequestedAudience, "remember": false,
		})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return srv, nil
}

func (h Hydra) accept(w http.ResponseWriter, kind, query string, body map[string]any) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := h.admin(http.MethodPut, "/admin/oauth2/auth/requests/"+kind+"/accept?"+query, body, &out); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	http.Redirect(w, &http.Request{Method: http.MethodGet}, out.RedirectTo, http.StatusFound)
}

func (h Hydra) admin(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.AdminURL+path, body)
	if err != nil {
		return err
	}
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

// Client is a registered OAuth 2.0 client.
type Client struct {
	ID, Secret string
}

// CreateClient registers a client for the authorization code and refresh
// token grants. authMethod is client_secret_basic or client_secret_post.
func (h Hydra) CreateClient(redirectURI, authMethod string) (Client, error) {
	secret := RandomHex(16)
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
	return Client{ID: out.ClientID, Secret: secret}, err
}

// SetAccessTokenLifespan makes the access tokens Hydra issues to c (by the
// authorization code and the refresh token grants) live d instead of the
// server's default, so that one test can have tokens that outlive its
// faults while the others keep short ones.
func (h Hydra) SetAccessTokenLifespan(c Client, d time.Duration) error {
	life := fmt.Sprintf("%ds", int(d.Seconds()))
	return h.admin(http.MethodPut, "/admin/clients/"+url.PathEscape(c.ID)+"/lifespans", map[string]any{
		"authorization_code_grant_access_token_lifespan": life,
		"refresh_token_grant_access_token_lifespan":      life,
	}, nil)
}

// Active introspects an access token.
func (h Hydra) Active(token string) (bool, error) {
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

// Revoke revokes a token (RFC 7009) as the client. Hydra revokes the
// whole grant: the access token and its refresh token.
func (h Hydra) Revoke(c Client, token string) error {
	req, _ := http.NewRequest(http.MethodPost, h.PublicURL+"/oauth2/revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke: status %d", resp.StatusCode)
	}
	return nil
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
