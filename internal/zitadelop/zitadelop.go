// Package zitadelop runs a real OpenID provider in the test process:
// github.com/zitadel/oidc/v3's OP (pkg/op) with its example storage and
// login (example/server), which implement RFC 8693 token exchange, a grant
// Ory Hydra lacks. The end-to-end tests get a user's access token from it
// through the authorization code flow, as an app would, and let the proxy
// exchange it. It is a test dependency only: nothing but tests imports it.
package zitadelop

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// Client is a registered confidential client (client_secret_basic) allowed
// the authorization code, refresh token and token exchange grants.
type Client struct {
	ID, Secret string
}

// OP is a running OpenID provider on a loopback port.
type OP struct {
	// URL is the issuer, which serves /auth, /oauth/token and /userinfo.
	URL string
	srv *http.Server
}

// appRedirect is the redirect URI of the app's client: the flow stops
// there, nothing listens on it.
const appRedirect = "http://127.0.0.1:9/callback"

// Start serves an OP with clients registered, on 127.0.0.1.
func Start(clients ...Client) (*OP, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	issuer := "http://" + ln.Addr().String()
	registered := map[string]*storage.Client{}
	for _, c := range clients {
		registered[c.ID] = storage.WebClient(c.ID, c.Secret, appRedirect)
	}
	st := storage.NewStorageWithClients(storage.NewUserStore(issuer), registered)
	// The example logs every request with slog; the tests want quiet.
	router := exampleop.SetupServer(issuer, st, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &OP{URL: issuer, srv: srv}, nil
}

// Close stops the OP.
func (o *OP) Close() { o.srv.Close() }

// TokenURL is the OP's token endpoint.
func (o *OP) TokenURL() string { return o.URL + "/oauth/token" }

// UserToken runs the authorization code flow with client c as the example
// storage's user "id1" (who may have tokens exchanged) and returns the
// user's access token.
func (o *OP) UserToken(c Client) (string, error) {
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	next := o.URL + "/auth?" + url.Values{
		"client_id": {c.ID}, "redirect_uri": {appRedirect}, "response_type": {"code"},
		"scope": {"openid profile"}, "state": {"state-1"},
	}.Encode()
	var code string
	for range 6 {
		resp, err := hc.Get(next)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			return "", fmt.Errorf("GET %s: %d without a redirect", next, resp.StatusCode)
		}
		if strings.HasPrefix(loc.String(), appRedirect) {
			code = loc.Query().Get("code")
			break
		}
		if loc.Path == "/login/username" {
			// The login form, submitted as the user.
			host := strings.TrimPrefix(o.URL, "http://")
			form := url.Values{"username": {"test-user@" + strings.Split(host, ":")[0]}, "password": {"verysecure"},
				"id": {loc.Query().Get("authRequestID")}}
			resp, err := hc.PostForm(o.URL+"/login/username", form)
			if err != nil {
				return "", err
			}
			resp.Body.Close()
			if loc, err = resp.Location(); err != nil {
				return "", fmt.Errorf("login: %d without a redirect", resp.StatusCode)
			}
		}
		next = o.URL + loc.RequestURI()
		if loc.IsAbs() {
			next = loc.String()
		}
	}
	if code == "" {
		return "", fmt.Errorf("the authorization code flow ended without a code")
	}
	req, _ := http.NewRequest(http.MethodPost, o.TokenURL(), strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {appRedirect},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("redeeming the code: %d %s %v", resp.StatusCode, out.Error, err)
	}
	return out.AccessToken, nil
}

// Subject returns the subject the OP's userinfo endpoint names for an
// access token, or an error if the OP does not accept it.
func (o *OP) Subject(accessToken string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, o.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo: %d", resp.StatusCode)
	}
	var out struct {
		Sub string `json:"sub"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	return out.Sub, nil
}
