package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// loadDoctorConfig runs Caddy with the Vault store (token) and connector
// demo (authURL, tokenURL, redirectURI) and returns the oauthconn app.
func loadDoctorConfig(t *testing.T, vaultAddr, token, authURL, tokenURL, redirectURI string) *App {
	t.Helper()
	port := freePort(t)
	redirect := ""
	if redirectURI != "" {
		redirect = "redirect_uri " + redirectURI
	}
	src := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s
	oauthconn {
		public_url http://127.0.0.1:%[2]d
		store vault {
			address %[3]s
			token   %[4]s
			prefix  doctor-test
		}
		connector demo {
			authorization_url %[5]s
			token_url %[6]s
			client_id doctor-client
			client_secret doctor-secret-canary
			%[7]s
		}
	}
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	oauthconn_connect /oauth/*
}
`, t.TempDir(), port, vaultAddr, token, authURL, tokenURL, redirect)
	cfg, err := adapt(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	v, err := caddy.ActiveContext().AppIfConfigured("oauthconn")
	if err != nil {
		t.Fatal(err)
	}
	return v.(*App)
}

func findingsText(fs []finding) string {
	var b bytes.Buffer
	printFindings(&b, fs)
	return b.String()
}

// TestDoctorAgainstHydraAndVault: against the real Hydra and Vault, a good
// configuration has no error; a wrong token URL, a redirect URI off the
// callback route and a Vault token lacking capabilities are each reported
// with the fix, and no secret is shown.
func TestDoctorAgainstHydraAndVault(t *testing.T) {
	v := testservices.Vault(t)
	h := testservices.Hydra(t)
	ctx := context.Background()

	app := loadDoctorConfig(t, v.Addr, v.Token, h.PublicURL+"/oauth2/auth", h.PublicURL+"/oauth2/token", "")
	good := app.doctor(ctx, "")
	text := findingsText(good)
	t.Logf("good configuration:\n%s", text)
	for _, f := range good {
		if f.Level == "error" {
			t.Fatalf("a good configuration has errors:\n%s", text)
		}
	}
	for _, want := range []string{"demo token_url", "demo metadata: the endpoints match", "store: Vault at " + v.Addr, "capabilities the proxy needs"} {
		if !strings.Contains(text, want) {
			t.Errorf("good configuration: no %q in\n%s", want, text)
		}
	}
	caddyStop(t)

	root, err := vault.New(vault.Config{Address: v.Addr, Token: v.Token})
	if err != nil {
		t.Fatal(err)
	}
	weak := vaultTokenWithPolicy(t, root, `path "secret/data/doctor-test/*" { capabilities = ["read"] }`)
	app = loadDoctorConfig(t, v.Addr, weak, h.PublicURL+"/oauth2/auth", h.PublicURL+"/oauth2/tokens",
		"http://127.0.0.1:1/oauth/cb")
	bad := app.doctor(ctx, "demo")
	text = findingsText(bad)
	t.Logf("broken configuration:\n%s", text)
	for _, want := range []string{
		"ERROR demo token_url: " + h.PublicURL + "/oauth2/tokens answers 404",
		"ERROR demo token_url: token_url is " + h.PublicURL + "/oauth2/tokens, but the metadata at",
		"fix: set token_url to " + h.PublicURL + "/oauth2/token",
		`ERROR demo redirect_uri: http://127.0.0.1:1/oauth/cb has path "/oauth/cb", but the callback route is /oauth/callback`,
		"ERROR store: vault: the token lacks create, update on secret/data/doctor-test/",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("broken configuration: no %q in\n%s", want, text)
		}
	}
	for _, secret := range []string{weak, v.Token, "doctor-secret-canary"} {
		if strings.Contains(text, secret) {
			t.Fatalf("a secret is shown:\n%s", text)
		}
	}
}

// TestDoctorRedirectURIForm: the redirect URI must be absolute, https
// unless on loopback, and at the callback route.
func TestDoctorRedirectURIForm(t *testing.T) {
	d := &doctorRun{app: &App{BasePath: "/oauth"}}
	for uri, want := range map[string]string{
		"https://connect.example.com/oauth/callback": "ok",
		"http://localhost:8080/oauth/callback":       "ok",
		"http://connect.example.com/oauth/callback":  "plain http",
		"/oauth/callback":                            "not an absolute",
		"https://connect.example.com/callback":       "but the callback route is /oauth/callback",
	} {
		d.out = nil
		d.redirectURI("demo", uri)
		if got := d.out[0]; !(want == "ok" && got.Level == "ok" || want != "ok" && got.Level == "error" && strings.Contains(got.Message, want)) {
			t.Errorf("%s: %+v, want %s", uri, got, want)
		}
	}
}

// TestAdminDoctorRoute: the admin API serves the findings as JSON, for one
// connector or all, and refuses an unknown connector.
func TestAdminDoctorRoute(t *testing.T) {
	startServer(t, testOptions{})
	rec := httptest.NewRecorder()
	err := AdminAPI{}.serve(rec, httptest.NewRequest("GET", "/oauthconn/doctor?connector=demo", nil))
	if err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %v %s", rec.Code, err, rec.Body)
	}
	var out struct{ Findings []finding }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	text := findingsText(out.Findings)
	if !strings.Contains(text, "OK    demo token_url:") || !strings.Contains(text, "a record can be written") {
		t.Fatalf("findings:\n%s", text)
	}
	err = AdminAPI{}.serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/oauthconn/doctor?connector=nope", nil))
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusNotFound {
		t.Fatalf("unknown connector: %v", err)
	}
}

// TestDoctorMicrosoftTenant: for provider microsoft the tenant's metadata
// is read; Microsoft answers 400 for a tenant it does not know, and the
// endpoints of a known one are compared.
func TestDoctorMicrosoftTenant(t *testing.T) {
	ms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"issuer":"https://login.microsoftonline.com/1111/v2.0","authorization_endpoint":"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize","token_endpoint":"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"}`)
	}))
	defer ms.Close()
	defer func(old string) { microsoftLogin = old }(microsoftLogin)
	microsoftLogin = ms.URL
	base := "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/"
	d := &doctorRun{app: &App{}, client: ms.Client()}
	d.metadata(context.Background(), "graph", "microsoft", "contoso.onmicrosoft.com", "", base+"authorize", base+"token")
	if len(d.out) != 1 || d.out[0].Level != "ok" {
		t.Fatalf("known tenant: %+v", d.out)
	}
	d.out = nil
	d.metadata(context.Background(), "graph", "microsoft", "contoso-typo", "", base+"authorize", base+"token")
	if len(d.out) != 1 || d.out[0].Level != "error" || d.out[0].Check != "tenant" || !strings.Contains(d.out[0].Message, `tenant "contoso-typo"`) {
		t.Fatalf("unknown tenant: %+v", d.out)
	}
}
