package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/imitation"
)

// TestPresetsLoad loads every preset with nothing but a client ID and
// secret, and refuses a preset's bad option with a clear error.
func TestPresetsLoad(t *testing.T) {
	src := func(conn string) string {
		return "{\n\toauthconn {\npublic_url http://localhost:8080\nconnector c {\n" + conn +
			"\n}\n\t}\n}\nhttp://localhost:8080 {\n\toauthconn_proxy c https://api.example.com\n}\n"
	}
	for _, name := range connector.ProviderNames() {
		if err := load(src("provider " + name + "\nclient_id id\nclient_secret secret")); err != nil {
			t.Errorf("provider %s: %v", name, err)
		}
	}
	for _, tt := range []struct{ conn, want string }{
		{"provider salesforce\ndomain https://acme.my.salesforce.com\nclient_id id", `connector c: domain must be login, test or a host name such as acme.my.salesforce.com, got "https://acme.my.salesforce.com"`},
		{"provider salesforce\ndomain {env.OAUTHCONN_TEST_DOMAIN}\nclient_id id", ""},
	} {
		t.Setenv("OAUTHCONN_TEST_DOMAIN", "acme.sandbox.my.salesforce.com")
		err := load(src(tt.conn))
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("%q: err = %v, want %q", tt.conn, err, tt.want)
		}
	}
}

const presetCaddyfile = `{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	oauthconn {
		public_url http://%[2]s
		store file {
			path %[1]s/oauthconn
		}
		connector app {
			provider %[3]s
			authorization_url %[4]s
			token_url %[5]s
			revocation_url %[6]s
			client_id imitation-client
			client_secret imitation-secret
			refresh_cooldown 1ms
			%[8]s
		}
	}
}

http://%[2]s {
	bind 127.0.0.1
	oauthconn_connect /oauth/*
	handle_path /api/* {
		oauthconn_proxy app %[7]s
	}
}
`

// TestPresetThroughTheProxy runs presets whose provider rotates refresh
// tokens through the proxy, against the provider's imitation: connect,
// call the API, and twice have the API refuse the access token (as after
// its expiry) so that the proxy refreshes and retries — the second
// refresh only works with the refresh token the first one rotated in.
// Then disconnect revokes the grant the provider's way. (The cooldown
// between 401-triggered refreshes is 1ms here, so that the second expiry
// is refreshed too.)
func TestPresetThroughTheProxy(t *testing.T) {
	for _, tc := range []struct {
		provider   string
		imitate    func(testing.TB) *imitation.Provider
		revocation string // the revocation URL's path at the imitation
		revoked    string // what disconnect says of the revocation
		authParams map[string]string
	}{
		{"github", func(t testing.TB) *imitation.Provider { return imitation.NewGitHub(t) },
			"/applications/imitation-client/grant", "revoked", map[string]string{"code_challenge_method": "S256"}},
		{"atlassian", func(t testing.TB) *imitation.Provider { return imitation.NewAtlassian(t) },
			"", "no_revocation_url", map[string]string{"audience": "api.atlassian.com", "prompt": "consent", "scope": "read:me offline_access"}},
		{"slack", func(t testing.TB) *imitation.Provider { return imitation.NewSlack(t) },
			"/api/auth.revoke", "revoked", map[string]string{"user_scope": "users:read"}},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			imi := tc.imitate(t)
			calls := make(chan imitation.APICall, 16)
			api := httptest.NewServer(imi.API(calls))
			t.Cleanup(api.Close)
			revocation := `""`
			if tc.revocation != "" {
				revocation = imi.At(tc.revocation)
			}
			port := freePort(t)
			s := &testServer{addr: fmt.Sprintf("127.0.0.1:%d", port), storeDir: t.TempDir()}
			s.base = "http://" + s.addr
			extra := ""
			if tc.provider == "atlassian" {
				// The preset asks Atlassian for the site's cloud id after
				// connecting; here, a server answering as
				// https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#3-1-get-the-cloudid-for-your-site
				// documents.
				sites := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, `[{"id":"1324a887-45db-1bf4-1e99-ef0ff456d421","name":"imitation","url":"https://imitation.atlassian.net","scopes":["read:me"]}]`)
				}))
				t.Cleanup(sites.Close)
				extra = "metadata_discovery " + sites.URL + "/oauth/token/accessible-resources cloud_id 0.id"
			}
			s.src = fmt.Sprintf(presetCaddyfile, s.storeDir, s.addr, tc.provider, imi.AuthURL(), imi.TokenURL(), revocation, api.URL, extra)
			s.load(t, s.src)

			// Connect: the provider is sent the preset's parameters.
			browser := newClient()
			resp, body := browser.do(t, "GET", s.base+"/oauth/connectors/app/authorize", nil, "")
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("authorize: %d %s", resp.StatusCode, body)
			}
			loc := resp.Header.Get("Location")
			u, _ := url.Parse(loc)
			for k, v := range tc.authParams {
				if u.Query().Get(k) != v {
					t.Errorf("authorization URL %s = %q, want %q", k, u.Query().Get(k), v)
				}
			}
			code, state, err := imi.Authorize(loc)
			if err != nil {
				t.Fatal(err)
			}
			if resp, body := s.callback(t, browser, state, code); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("callback: %d %s", resp.StatusCode, body)
			}

			app := newClient()
			get := func() (int, string) {
				resp, body := app.do(t, "GET", s.base+"/api/v1/me", nil, "")
				return resp.StatusCode, body
			}
			tokenRequests := func(grant string) (n int, last imitation.Request) {
				for _, r := range imi.Requests() {
					if r.Params["grant_type"] == grant {
						n, last = n+1, r
					}
				}
				return n, last
			}
			var status int
			next := func() imitation.APICall {
				select {
				case c := <-calls:
					return c
				case <-time.After(10 * time.Second):
					t.Fatalf("the API received no request (last answer %d %s)", status, body)
					return imitation.APICall{}
				}
			}
			status, body = get()
			first := next()
			if status != http.StatusOK || !first.OK || first.Path != "/v1/me" {
				t.Fatalf("proxied request: %d %s (the API saw %+v)", status, body, first)
			}
			var seenRT string
			for i := 1; i <= 2; i++ {
				// The API refuses the token it last got: the proxy
				// refreshes once, and retries with the new token.
				time.Sleep(10 * time.Millisecond) // past the 1ms cooldown since the last refresh
				imi.Expire(first.Token)
				status, body = get()
				refused, retried := next(), next()
				if status != http.StatusOK || refused.OK || !retried.OK || retried.Token == first.Token {
					t.Fatalf("after the token's expiry #%d: %d %s (the API saw %+v then %+v)", i, status, body, refused, retried)
				}
				n, last := tokenRequests("refresh_token")
				if n != i {
					t.Fatalf("%d refresh requests after expiry #%d, want %d", n, i, i)
				}
				if last.Params["refresh_token"] == seenRT {
					t.Fatalf("refresh #%d sent the refresh token rotated out by the one before", i)
				}
				seenRT = last.Params["refresh_token"]
				first = retried
			}

			// Disconnect revokes the way the provider does.
			resp, body = newClient().do(t, "DELETE", s.base+"/oauth/connectors/app", nil, "")
			var got struct {
				Disconnected, Revoked bool
				Revocation            string
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || !got.Disconnected ||
				got.Revocation != tc.revoked || got.Revoked != (tc.revoked == "revoked") {
				t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
			}
			if _, ok := imi.Valid(first.Token); ok == (tc.revoked == "revoked") {
				t.Errorf("after disconnect the access token is valid: %v", ok)
			}
			if status, body := get(); status != http.StatusUnauthorized || !strings.Contains(body, "authorization_required") {
				t.Fatalf("after disconnect: %d %s", status, body)
			}
			if len(calls) != 0 {
				t.Fatalf("the API received %d more requests", len(calls))
			}
			caddyStop(t)
		})
	}
}
