package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSidecar walks one connection through its life: not connected, the
// authorization code grant with PKCE, proxying with the stored token,
// a replayed callback, proactive refresh, refresh after an upstream 401 with
// a replayed POST body, and a storm of requests on an expired token.
func TestSidecar(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	h, up, counter, c, s := f.h, f.up, f.counter, f.c, f.s
	app := newBrowser() // the app calling the API through the sidecar
	user := newBrowser()

	t.Run("not connected", func(t *testing.T) {
		resp, body := app.do(t, "GET", s.base+"/demo/items", "", "")
		var e map[string]string
		json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != http.StatusUnauthorized || e["error"] != "authorization_required" || e["connector"] != "demo" ||
			e["authorize_url"] != "http://localhost:9080/oauth/connectors/demo/authorize" {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		if up.Calls() != 0 {
			t.Fatal("the upstream was called without a token")
		}
		_, body = app.do(t, "GET", s.base+"/oauth/connectors", "", "")
		if !strings.Contains(body, `"name":"demo"`) || !strings.Contains(body, `"status":"authorization_required"`) {
			t.Fatalf("status = %s", body)
		}
	})

	t.Run("authorize", func(t *testing.T) {
		resp, body := user.do(t, "POST", s.base+"/oauth/connectors/demo/authorize", "application/json", `{"return_to":"/oauth/?from=test"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("authorize: %d %s", resp.StatusCode, body)
		}
		var out struct {
			AuthorizationURL string `json:"authorization_url"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		au, _ := url.Parse(out.AuthorizationURL)
		q := au.Query()
		if !strings.HasPrefix(out.AuthorizationURL, h.PublicURL+"/oauth2/auth?") || q.Get("response_type") != "code" ||
			q.Get("client_id") != c.ID || q.Get("redirect_uri") != "http://localhost:9080/oauth/callback" ||
			len(q.Get("state")) < 22 || q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 ||
			q.Get("scope") != "openid offline_access" {
			t.Fatalf("authorization URL = %s", out.AuthorizationURL)
		}
		ck := resp.Header.Get("Set-Cookie")
		for _, want := range []string{"oauthconn_flow_demo=", "Path=/oauth;", "Max-Age=600", "HttpOnly", "SameSite=Lax"} {
			if !strings.Contains(ck, want) {
				t.Errorf("Set-Cookie %q lacks %q", ck, want)
			}
		}
		if strings.Contains(ck, "Secure") {
			t.Error("Secure cookie on an http public_url")
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Error("authorize response is cacheable")
		}

		// The user's browser goes to Hydra, logs in and consents, and
		// comes back through the callback.
		resp, body = user.do(t, "GET", out.AuthorizationURL, "", "")
		if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != s.base+"/oauth/?from=test" {
			t.Fatalf("after the flow: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
		}
		if counter.Count("authorization_code") != 1 {
			t.Fatalf("authorization_code grants = %d, want 1", counter.Count("authorization_code"))
		}
		rec := s.stored(t, "demo")
		if rec["access_token"] == "" || rec["refresh_token"] == "" || rec["token_type"] == nil || rec["scope"] == nil {
			t.Fatalf("Vault holds %v", keys(rec))
		}
		if _, err := time.Parse(time.RFC3339, rec["expiry"].(string)); err != nil {
			t.Fatalf("expiry %v: %v", rec["expiry"], err)
		}
		_, body = app.do(t, "GET", s.base+"/oauth/connectors", "", "")
		if !strings.Contains(body, `"status":"connected"`) || strings.Contains(body, rec["access_token"].(string)) {
			t.Fatalf("status = %s", body)
		}
	})

	t.Run("replayed callback redeems nothing", func(t *testing.T) {
		before := counter.Total()
		resp, body := user.do(t, "GET", user.callbackURL(t), "", "")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "unknown or was already used") {
			t.Fatalf("replay: %d %s", resp.StatusCode, body)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("error page headers: %v", resp.Header)
		}
		if counter.Total() != before {
			t.Fatal("a replayed callback made a token request")
		}
	})

	t.Run("proxy attaches the token and strips the app's credentials and cookies", func(t *testing.T) {
		req, _ := http.NewRequest("GET", s.base+"/demo/items?x=1", nil)
		req.Header.Set("Authorization", "Basic YXBwOnNlY3JldA==")
		req.Header.Set("proxy-authorization", "Basic eA==")
		req.Header.Set("Cookie", "oauthconn_flow_abc=binding; theme=dark")
		resp, err := app.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream") != "yes" {
			t.Fatalf("proxied: %d", resp.StatusCode)
		}
		got := up.last(t)
		want := "Bearer " + s.stored(t, "demo")["access_token"].(string)
		upURL, _ := url.Parse(up.URL)
		if got.Authorization != want || !got.Active || got.ProxyAuthorization != "" || got.Cookie != "" ||
			got.Path != "/items" || got.RawQuery != "x=1" || got.Host != upURL.Host {
			t.Fatalf("upstream saw %+v", got)
		}
	})

	t.Run("proactive refresh", func(t *testing.T) {
		old := s.stored(t, "demo")
		exp, _ := time.Parse(time.RFC3339, old["expiry"].(string))
		// Hydra's short-lived tokens are due two thirds into their
		// lifetime. From shortly before then until just before expiry,
		// requests keep succeeding while one of them triggers the refresh.
		time.Sleep(time.Until(exp.Add(-2500 * time.Millisecond)))
		for time.Now().Before(exp.Add(-300*time.Millisecond)) && s.stored(t, "demo")["access_token"] == old["access_token"] {
			resp, _ := app.do(t, "GET", s.base+"/demo/items", "", "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request before expiry: %d", resp.StatusCode)
			}
			time.Sleep(100 * time.Millisecond)
		}
		waitFor(t, 2*time.Second, func() bool { return s.stored(t, "demo")["access_token"] != old["access_token"] })
		rec := s.stored(t, "demo")
		if rec["refresh_token"] == old["refresh_token"] {
			t.Fatal("Hydra rotates refresh tokens; the new one was not stored")
		}
		if counter.Count("refresh_token") != 1 {
			t.Fatalf("refresh grants = %d, want 1", counter.Count("refresh_token"))
		}
		resp, _ := app.do(t, "GET", s.base+"/demo/items", "", "")
		if resp.StatusCode != http.StatusOK || up.last(t).Authorization != "Bearer "+rec["access_token"].(string) {
			t.Fatalf("after refresh: %d with %q", resp.StatusCode, up.last(t).Authorization)
		}
	})

	t.Run("upstream 401 refreshes and replays the POST body", func(t *testing.T) {
		// The upstream stops accepting the current access token; the
		// refresh token remains good.
		cur := s.stored(t, "demo")
		up.Reject(cur["access_token"].(string))
		refreshes := counter.Count("refresh_token")
		calls := up.Calls()
		resp, body := app.do(t, "POST", s.base+"/demo/items", "application/json", `{"name":"replayed"}`)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"body":"{\"name\":\"replayed\"}"`) {
			t.Fatalf("POST after revoke: %d %s", resp.StatusCode, body)
		}
		if up.Calls() != calls+2 || counter.Count("refresh_token") != refreshes+1 {
			t.Fatalf("upstream calls +%d, refreshes +%d; want +2 and +1", up.Calls()-calls, counter.Count("refresh_token")-refreshes)
		}
		seen := up.Seen()
		if a, b := seen[len(seen)-2], seen[len(seen)-1]; a.Body != b.Body || a.Authorization == b.Authorization || !b.Active {
			t.Fatalf("first try %+v, retry %+v", a, b)
		}
	})

	t.Run("a 401 that a refresh cannot cure passes through, once per cooldown", func(t *testing.T) {
		time.Sleep(2100 * time.Millisecond) // past the 2 s cooldown of the last 401
		refreshes := counter.Count("refresh_token")
		for i := range 5 {
			resp, body := app.do(t, "GET", s.base+"/demo/always401", "", "")
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "from the upstream") {
				t.Fatalf("try %d: %d %s", i, resp.StatusCode, body)
			}
		}
		if got := counter.Count("refresh_token") - refreshes; got != 1 {
			t.Fatalf("5 requests to an always-401 endpoint caused %d refreshes; want 1 per cooldown", got)
		}
	})

	t.Run("storm on an expired token refreshes once", func(t *testing.T) {
		rec := s.stored(t, "demo")
		exp, _ := time.Parse(time.RFC3339, rec["expiry"].(string))
		time.Sleep(time.Until(exp.Add(1100 * time.Millisecond)))
		refreshes := counter.Count("refresh_token")
		bad := storm(200, s.base+"/demo/items")
		if got := counter.Count("refresh_token") - refreshes; got != 1 || bad != 0 {
			t.Fatalf("200 requests on an expired token: %d refreshes, %d failures; want 1 and 0", got, bad)
		}
	})
}

// TestRevokedGrant: once the provider revokes the grant, the refresh gets
// invalid_grant, the record in Vault is marked as needing authorization
// (why and since when, no secret) and the app is told to authorize again.
func TestRevokedGrant(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	h, counter, c, s := f.h, f.counter, f.c, f.s
	connect(t, s, newBrowser())
	app := newBrowser()
	if resp, _ := app.do(t, "GET", s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("before revocation: %d", resp.StatusCode)
	}
	// Revoking the access token at Hydra revokes its whole grant.
	if err := h.Revoke(c, s.stored(t, "demo")["access_token"].(string)); err != nil {
		t.Fatal(err)
	}
	resp, body := app.do(t, "GET", s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"error":"authorization_required"`) {
		t.Fatalf("after revocation: %d %s", resp.StatusCode, body)
	}
	if counter.Count("refresh_token") != 1 {
		t.Fatalf("refresh grants = %d, want 1", counter.Count("refresh_token"))
	}
	rec := s.record(t, "demo")
	if rec["state"] != "authorization_required" || rec["reason"] == nil || rec["since"] == nil || rec["refresh_token"] != nil || rec["access_token"] != nil {
		t.Fatalf("Vault holds %v after invalid_grant; want a marked record without secrets", keys(rec))
	}
	_, body = app.do(t, "GET", s.base+"/oauth/connectors", "", "")
	if !strings.Contains(body, `"status":"authorization_required"`) || !strings.Contains(body, "authorize again") {
		t.Fatalf("status = %s", body)
	}
}

// connect runs the authorization code grant in the browser b.
func connect(t *testing.T, s *sidecar, b *browser) {
	t.Helper()
	resp, body := b.do(t, "GET", s.base+"/oauth/connectors/demo/authorize", "", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "demo is connected") {
		t.Fatalf("connect: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestPostClientAuth connects and refreshes with client_secret_post, the
// client authentication Microsoft Entra uses, against a Hydra client that
// accepts only that.
func TestPostClientAuth(t *testing.T) {
	f := newFixture(t, "client_secret_post")
	counter, s := f.counter, f.s
	connect(t, s, newBrowser())
	old := s.stored(t, "demo")
	exp, _ := time.Parse(time.RFC3339, old["expiry"].(string))
	time.Sleep(time.Until(exp.Add(time.Second)))
	app := newBrowser()
	resp, body := app.do(t, "GET", s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusOK || counter.Count("refresh_token") != 1 {
		t.Fatalf("after expiry: %d %s, %d refreshes", resp.StatusCode, body, counter.Count("refresh_token"))
	}
}

// TestTokenEndpointOutage: while the token endpoint fails, an expired
// connection answers 503 with Retry-After and keeps its token in Vault;
// once the endpoint is back, the first request after Retry-After refreshes
// and succeeds.
func TestTokenEndpointOutage(t *testing.T) {
	f := newFixture(t, "client_secret_basic")
	up, counter, s := f.up, f.counter, f.s
	connect(t, s, newBrowser())
	old := s.stored(t, "demo")
	exp, _ := time.Parse(time.RFC3339, old["expiry"].(string))
	counter.Down.Store(true)
	time.Sleep(time.Until(exp.Add(time.Second)))
	app := newBrowser()
	calls := up.Calls()
	resp, body := app.do(t, "GET", s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"error":"token_unavailable"`) {
		t.Fatalf("during the outage: %d %s", resp.StatusCode, body)
	}
	if up.Calls() != calls {
		t.Fatal("the upstream was called with an expired token")
	}
	if rec := s.stored(t, "demo"); rec == nil || rec["refresh_token"] != old["refresh_token"] {
		t.Fatal("a transient failure lost the stored token")
	}
	counter.Down.Store(false)
	wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	time.Sleep(time.Duration(wait) * time.Second)
	resp, body = app.do(t, "GET", s.base+"/demo/items", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the outage: %d %s", resp.StatusCode, body)
	}
}
