package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
)

const cp1 = `{"access_token":{"xms_cc":{"values":["cp1"]}}}`

// sameJSON reports whether a and b are equal JSON values.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("not JSON: %q", a)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	return reflect.DeepEqual(x, y)
}

// TestClaimsChallenge: the microsoft preset declares cp1 on the authorize
// and token requests; an upstream's claims challenge is not answered with a
// refresh but with 401 authorization_required carrying the claims and an
// authorize URL whose redirect to the provider carries them, merged with
// cp1. Signing in again that way satisfies the upstream. An authorize URL
// naming a challenge the proxy did not record carries cp1 only.
func TestClaimsChallenge(t *testing.T) {
	s := startMicrosoft(t)
	q := s.connectVia(t, s.base+"/oauth/connectors/graph/authorize")
	if !sameJSON(t, q.Get("claims"), cp1) {
		t.Fatalf("authorization request claims %q; want %s", q.Get("claims"), cp1)
	}
	if reqs := s.entra.Requests(); len(reqs) != 1 || reqs[0].GrantType != "authorization_code" || !sameJSON(t, reqs[0].Claims, cp1) {
		t.Fatalf("token requests %+v; want the code redeemed with claims %s", reqs, cp1)
	}
	app := newClient()
	if resp, body := app.do(t, "GET", s.base+"/graph/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/graph: %d %s", resp.StatusCode, body)
	}

	challenge := s.graph.Revoke()
	tokenRequests := len(s.entra.Requests())
	var authorizeURL string
	for range 3 {
		resp, body := app.do(t, "GET", s.base+"/graph/v1.0/me", nil, "")
		var got struct {
			Error        string          `json:"error"`
			Connector    string          `json:"connector"`
			AuthorizeURL string          `json:"authorize_url"`
			Claims       json.RawMessage `json:"claims"`
		}
		if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(body), &got) != nil ||
			got.Error != "authorization_required" || got.Connector != "graph" {
			t.Fatalf("/graph after revocation: %d %s", resp.StatusCode, body)
		}
		if !sameJSON(t, string(got.Claims), challenge) {
			t.Fatalf("claims %s; want the upstream's %s", got.Claims, challenge)
		}
		if authorizeURL != "" && got.AuthorizeURL != authorizeURL {
			t.Fatalf("the same challenge got another authorize URL: %s, then %s", authorizeURL, got.AuthorizeURL)
		}
		authorizeURL = got.AuthorizeURL
	}
	if n := len(s.entra.Requests()); n != tokenRequests {
		t.Fatalf("the token endpoint received %d requests after the claims challenge; want none", n-tokenRequests)
	}
	u, err := url.Parse(authorizeURL)
	if err != nil || !strings.HasPrefix(authorizeURL, s.base+"/oauth/connectors/graph/authorize?challenge=") || len(u.Query().Get("challenge")) < 32 {
		t.Fatalf("authorize_url %q", authorizeURL)
	}
	if strings.Contains(authorizeURL, "access_token") || strings.Contains(authorizeURL, "entra-") {
		t.Fatalf("authorize_url %q carries claims or a token", authorizeURL)
	}

	// A challenge id the proxy did not issue brings no claims of its own.
	forged := s.connectVia(t, s.base+"/oauth/connectors/graph/authorize?challenge=0123456789abcdef0123456789abcdef")
	if !sameJSON(t, forged.Get("claims"), cp1) {
		t.Fatalf("a forged challenge id: authorization request claims %q; want cp1 only", forged.Get("claims"))
	}

	q = s.connectVia(t, authorizeURL)
	var want map[string]map[string]any
	json.Unmarshal([]byte(challenge), &want)
	want["access_token"]["xms_cc"] = map[string]any{"values": []any{"cp1"}}
	wantJSON, _ := json.Marshal(want)
	if !sameJSON(t, q.Get("claims"), string(wantJSON)) {
		t.Fatalf("authorization request claims %q; want %s", q.Get("claims"), wantJSON)
	}
	if resp, body := app.do(t, "GET", s.base+"/graph/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/graph after authorizing again: %d %s", resp.StatusCode, body)
	}
}

// TestClaimsChallengeOfAScopedToken: SharePoint's claims challenge to a
// per-resource token is handed to the app too, without a refresh.
func TestClaimsChallengeOfAScopedToken(t *testing.T) {
	s := startMicrosoft(t)
	s.connectVia(t, s.base+"/oauth/connectors/graph/authorize")
	app := newClient()
	if resp, body := app.do(t, "GET", s.base+"/sharepoint/_api/web", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/sharepoint: %d %s", resp.StatusCode, body)
	}
	challenge := s.sharepoint.Revoke()
	n := len(s.entra.Requests())
	resp, body := app.do(t, "GET", s.base+"/sharepoint/_api/web", nil, "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"authorization_required"`) || !strings.Contains(body, `"nbf"`) {
		t.Fatalf("/sharepoint after revocation: %d %s (challenge %s)", resp.StatusCode, body, challenge)
	}
	if len(s.entra.Requests()) != n {
		t.Fatal("the token endpoint was called after a claims challenge")
	}
}

// TestCAEOff: with cae off, neither the authorization nor the token
// requests carry a claims parameter, and Graph keeps honouring the token
// after a revocation event, as it does for clients without cp1.
func TestCAEOff(t *testing.T) {
	s := startMicrosoft(t)
	q := s.connectVia(t, s.base+"/oauth/connectors/plain/authorize")
	if _, ok := q["claims"]; ok {
		t.Fatalf("authorization request with cae off carries claims %q", q.Get("claims"))
	}
	for _, r := range s.entra.Requests() {
		if r.Claims != "" {
			t.Fatalf("token request with cae off carries claims %q", r.Claims)
		}
	}
	s.graph.Revoke()
	if resp, body := newClient().do(t, "GET", s.base+"/plain/v1.0/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/plain: %d %s", resp.StatusCode, body)
	}
}

func TestClaimsChallengeParsing(t *testing.T) {
	const claims = `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
	const b64 = "eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19"
	tests := []struct {
		name   string
		header []string
		want   string // empty: no challenge
	}{
		{"Microsoft's example", []string{`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="` + b64 + `"`}, claims},
		{"unquoted error", []string{`Bearer error=insufficient_claims, claims="` + b64 + `"`}, claims},
		{"second challenge", []string{`Basic realm="x"`, `bearer Error="insufficient_claims",Claims="` + b64 + `"`}, claims},
		{"another error", []string{`Bearer error="invalid_token", claims="` + b64 + `"`}, ""},
		{"no claims", []string{`Bearer error="insufficient_claims"`}, ""},
		{"not base64", []string{`Bearer error="insufficient_claims", claims="%%%"`}, ""},
		{"not an object", []string{`Bearer error="insufficient_claims", claims="WzFd"`}, ""},
		{"escaped quote", []string{`Bearer realm="a\"b", error="insufficient_claims", claims="` + b64 + `"`}, claims},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.header {
				h.Add("WWW-Authenticate", v)
			}
			got, ok := claimsChallenge(discovery.ParseChallenge(h))
			if tt.want == "" {
				if ok {
					t.Fatalf("found claims %q", got)
				}
				return
			}
			if !ok || !sameJSON(t, got, tt.want) {
				t.Fatalf("claimsChallenge = %q, %v", got, ok)
			}
		})
	}
}

func TestCAEOptionErrors(t *testing.T) {
	if _, err := adapt(global("connector a {\ncae maybe\n}")); err == nil || !strings.Contains(err.Error(), `connector a: cae must be on or off, got "maybe"`) {
		t.Fatalf("cae maybe: %v", err)
	}
	src := global("public_url http://localhost:8080\nconnector a {\nauthorization_url https://as/a\ntoken_url https://as/t\nclient_id x\ncae off\n}")
	if err := load(src); err == nil || !strings.Contains(err.Error(), "connector a: cae applies to the microsoft provider only") {
		t.Fatalf("cae on a generic connector: %v", err)
	}
}

// TestClaimsChallengeThroughTheConfirmPage: an authorize URL with a
// challenge that another site leads the person to shows the confirmation
// page, whose form keeps the challenge, so the authorization it starts
// carries the claims.
func TestClaimsChallengeThroughTheConfirmPage(t *testing.T) {
	s := startMicrosoft(t)
	s.connectVia(t, s.base+"/oauth/connectors/graph/authorize")
	s.graph.Revoke()
	resp, body := newClient().do(t, "GET", s.base+"/graph/v1.0/me", nil, "")
	var got struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("/graph after revocation: %d %s", resp.StatusCode, body)
	}
	id := strings.TrimPrefix(got.AuthorizeURL, s.base+"/oauth/connectors/graph/authorize?challenge=")
	browser := newClient()
	resp, body = browser.do(t, "GET", got.AuthorizeURL, http.Header{"Sec-Fetch-Site": {"cross-site"}}, "")
	action := `action="/oauth/connectors/graph/authorize?challenge=` + id + `"`
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, action) {
		t.Fatalf("confirmation page: %d, want a form with %s in %s", resp.StatusCode, action, body)
	}
	resp, _ = browser.do(t, "POST", s.base+"/oauth/connectors/graph/authorize?challenge="+id,
		http.Header{"Sec-Fetch-Site": {"same-origin"}, "Content-Type": {"application/x-www-form-urlencoded"}}, "")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || !strings.Contains(loc.Query().Get("claims"), `"nbf"`) ||
		!strings.Contains(loc.Query().Get("claims"), `"cp1"`) {
		t.Fatalf("the confirmed form: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
