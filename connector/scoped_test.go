package connector

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/imitation"
)

// entraConnector is the microsoft preset against the Entra imitation, with
// a connection authorized: it returns the connector and the code
// exchange's refresh token.
func entraConnector(t *testing.T, e *imitation.Entra, secret string) (*Connector, string) {
	t.Helper()
	cfg := Config{Name: "graph", Provider: "microsoft", AuthURL: e.AuthorizeURL("contoso"), TokenURL: e.TokenURL("contoso"),
		ClientID: "ms-client", ClientSecret: secret, RedirectURL: "http://localhost/oauth/callback", PKCE: true}
	if err := Preset(&cfg, "contoso"); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(c.AuthCodeURL("state-1", "verifier-verifier-verifier-verifier-verifier"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return c, loc.Query().Get("code")
}

// RefreshScoped asks Entra for another resource's token with the
// connection's refresh token: the scope and offline_access, the cp1
// claims, the client's own authentication; Entra's answer carries a new
// refresh token, and errors are classified as for any refresh.
func TestRefreshScopedAgainstEntra(t *testing.T) {
	e := imitation.NewEntra("ms-client", "ms-secret")
	defer e.Close()
	c, code := entraConnector(t, e, "ms-secret")
	tok, err := c.Exchange(context.Background(), code, "verifier-verifier-verifier-verifier-verifier")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := c.RefreshScoped(context.Background(), tok.RefreshToken, []string{"https://contoso.sharepoint.com/.default"})
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := e.Lookup(sp.AccessToken); !ok || a.Audience != "https://contoso.sharepoint.com" || !a.CP1 {
		t.Fatalf("the scoped token is %+v", a)
	}
	if sp.RefreshToken == "" || sp.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh token %q; want a rotated one", sp.RefreshToken)
	}
	reqs := e.Requests()
	last := reqs[len(reqs)-1]
	if last.GrantType != "refresh_token" || last.Scope != "https://contoso.sharepoint.com/.default offline_access" || last.Claims != `{"access_token":{"xms_cc":{"values":["cp1"]}}}` {
		t.Fatalf("token request %+v", last)
	}
	// The connection's own refresh (no scope) also declares cp1.
	own, err := c.Refresh(context.Background(), sp.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := e.Lookup(own.AccessToken); a.Audience != "https://graph.microsoft.com" || !a.CP1 {
		t.Fatalf("the connection's refreshed token is %+v", a)
	}
	// The redeemed refresh token is refused (the imitation honours only
	// the latest): invalid_grant.
	if _, err := c.RefreshScoped(context.Background(), tok.RefreshToken, []string{"https://contoso.sharepoint.com/.default"}); !errors.Is(err, ErrGrantRejected) {
		t.Fatalf("redeemed refresh token: %v; want ErrGrantRejected", err)
	}
	if _, err := c.RefreshScoped(context.Background(), "", nil); !errors.Is(err, ErrGrantRejected) {
		t.Fatalf("no refresh token: %v", err)
	}
	bad, _ := entraConnector(t, e, "wrong-secret")
	if _, err := bad.RefreshScoped(context.Background(), own.RefreshToken, []string{"https://contoso.sharepoint.com/.default"}); !errors.Is(err, ErrClientRejected) {
		t.Fatalf("wrong client secret: %v; want ErrClientRejected", err)
	}
}

func TestClaimsMerge(t *testing.T) {
	c := &Connector{cfg: Config{ClientCapabilities: []string{"cp1"}}}
	claims, err := ParseClaims([]byte(`{"access_token":{"nbf":{"essential":true,"value":"1"}},"id_token":{"acrs":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse((&Connector{cfg: c.cfg, oauth: c.oauth}).AuthCodeURLFor("s", "v", claims, nil))
	want := `{"access_token":{"nbf":{"essential":true,"value":"1"},"xms_cc":{"values":["cp1"]}},"id_token":{"acrs":null}}`
	if got := u.Query().Get("claims"); got != want {
		t.Fatalf("claims %s; want %s", got, want)
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"access_token":1}`, `null`, `{`} {
		if _, err := ParseClaims([]byte(bad)); err == nil {
			t.Errorf("ParseClaims(%s) accepted it", bad)
		}
	}
	if got := (&Connector{}).claims(nil); got != "" {
		t.Fatalf("no capabilities, no challenge: claims %q", got)
	}
}
