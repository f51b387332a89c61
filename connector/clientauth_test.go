package connector

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2/clientcredentials"
)

// recorder is the base transport of the connector under test: it keeps
// every request's form and answers with a token (or with answer).
type recorder struct {
	mu     sync.Mutex
	forms  []url.Values
	auths  []string
	answer func() *http.Response
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(b))
	r.mu.Lock()
	r.forms = append(r.forms, form)
	r.auths = append(r.auths, req.Header.Get("Authorization"))
	answer := r.answer
	r.mu.Unlock()
	if answer != nil {
		return answer(), nil
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Request: req,
		Body: io.NopCloser(strings.NewReader(`{"access_token":"at","token_type":"Bearer","refresh_token":"rt","expires_in":3600}`))}, nil
}

func (r *recorder) last(t *testing.T) (url.Values, string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.forms) == 0 {
		t.Fatal("no request")
	}
	return r.forms[len(r.forms)-1], r.auths[len(r.auths)-1]
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func selfSigned(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "graph app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func keyConfig(keyFile string) Config {
	return Config{Name: "app", AuthURL: "https://as.example/authorize", TokenURL: "https://as.example/token",
		RevocationURL: "https://as.example/revoke", ClientID: "client-1", RedirectURL: "https://proxy.example/oauth/callback",
		AuthStyle: AuthPrivateKeyJWT, ClientKeyFile: keyFile}
}

// verify checks a request's client authentication and returns the
// assertion's header and claims.
func verify(t *testing.T, form url.Values, auth string, pub crypto.PublicKey, wantAlg, wantAud string) (jose.Header, jwt.Claims) {
	t.Helper()
	if auth != "" || form.Has("client_secret") {
		t.Fatalf("a secret was sent: Authorization %q, client_secret %t", auth, form.Has("client_secret"))
	}
	if form.Get("client_id") != "client-1" || form.Get("client_assertion_type") != JWTBearerAssertionType {
		t.Fatalf("form %v", form)
	}
	tok, err := jwt.ParseSigned(form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg)})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := tok.Claims(pub, &c); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := c.Validate(jwt.Expected{Issuer: "client-1", Subject: "client-1", AnyAudience: jwt.Audience{wantAud}, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if c.ID == "" || c.IssuedAt == nil || c.NotBefore == nil || c.Expiry == nil {
		t.Fatalf("claims %+v", c)
	}
	if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life <= 0 || life > 5*time.Minute {
		t.Fatalf("assertion lives %v", life)
	}
	if typ := tok.Headers[0].ExtraHeaders["typ"]; typ != "JWT" {
		t.Fatalf("typ %v", typ)
	}
	return tok.Headers[0], c
}

func thumb(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	s, err := jwkThumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPrivateKeyJWTFile: every token request (code exchange, refresh,
// revocation) carries a new RS256 assertion from the PEM key in each of
// its encodings, with the RFC 7638 thumbprint as kid and a fresh jti, and
// no secret.
func TestPrivateKeyJWTFile(t *testing.T) {
	dir := t.TempDir()
	rk := rsaKey(t)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rk)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	for _, tt := range []struct {
		name, typ string
		der       []byte
		pub       crypto.PublicKey
		alg       string
	}{
		{"pkcs8 rsa", "PRIVATE KEY", pkcs8, &rk.PublicKey, "RS256"},
		{"pkcs1 rsa", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), &rk.PublicKey, "RS256"},
		{"sec1 ec", "EC PRIVATE KEY", sec1, &ek.PublicKey, "ES256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".pem")
			writePEM(t, path, tt.typ, tt.der)
			rec := &recorder{}
			c, err := New(keyConfig(path), rec)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := c.Exchange(ctx, "code", "verifier"); err != nil {
				t.Fatal(err)
			}
			form, auth := rec.last(t)
			h, first := verify(t, form, auth, tt.pub, tt.alg, "https://as.example/token")
			if form.Get("code") != "code" || form.Get("grant_type") != "authorization_code" {
				t.Fatalf("form %v", form)
			}
			if h.KeyID != thumb(t, tt.pub) {
				t.Fatalf("kid %q", h.KeyID)
			}
			if _, ok := h.ExtraHeaders["x5t#S256"]; ok {
				t.Fatal("x5t#S256 without a certificate")
			}
			if _, err := c.Refresh(ctx, "rt"); err != nil {
				t.Fatal(err)
			}
			form, auth = rec.last(t)
			_, second := verify(t, form, auth, tt.pub, tt.alg, "https://as.example/token")
			if first.ID == second.ID {
				t.Fatal("jti reused")
			}
			if ok, err := c.Revoke(ctx, "rt", "refresh_token"); !ok || err != nil {
				t.Fatal(ok, err)
			}
			form, auth = rec.last(t)
			verify(t, form, auth, tt.pub, tt.alg, "https://as.example/token")
			if form.Get("token") != "rt" {
				t.Fatalf("revocation form %v", form)
			}
		})
	}
}

// TestPrivateKeyJWTMicrosoft: the microsoft preset signs RSA keys with
// PS256 and puts the certificate's x5t#S256 and x5t in the header, as
// Microsoft's certificate-credentials document describes; client_key_id
// and assertion_audience override kid and aud.
func TestPrivateKeyJWTMicrosoft(t *testing.T) {
	dir := t.TempDir()
	rk := rsaKey(t)
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	cert := selfSigned(t, rk)
	writePEM(t, filepath.Join(dir, "k.pem"), "PRIVATE KEY", der)
	writePEM(t, filepath.Join(dir, "c.pem"), "CERTIFICATE", cert)
	cfg := Config{Name: "graph", Provider: "microsoft", ClientID: "client-1", RedirectURL: "https://p.example/cb",
		AuthStyle: AuthPrivateKeyJWT, ClientKeyFile: filepath.Join(dir, "k.pem"), ClientCertFile: filepath.Join(dir, "c.pem")}
	if err := Preset(&cfg, "contoso"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	form, auth := rec.last(t)
	h, _ := verify(t, form, auth, &rk.PublicKey, "PS256", "https://login.microsoftonline.com/contoso/oauth2/v2.0/token")
	s256 := sha256.Sum256(cert)
	if h.ExtraHeaders["x5t#S256"] != base64.RawURLEncoding.EncodeToString(s256[:]) || h.ExtraHeaders["x5t"] == nil {
		t.Fatalf("header %v", h.ExtraHeaders)
	}

	cfg.ClientKeyID, cfg.AssertionAudience = "my-kid", "https://login.microsoftonline.com/contoso/v2.0"
	c, err = New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	form, auth = rec.last(t)
	if h, _ := verify(t, form, auth, &rk.PublicKey, "PS256", cfg.AssertionAudience); h.KeyID != "my-kid" {
		t.Fatalf("kid %q", h.KeyID)
	}
}

// TestPrivateKeyJWTRotation: a key file replaced on disk is used by the
// next token request; a key deleted afterwards fails the request as a
// client rejection, without key material in the error.
func TestPrivateKeyJWTRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	k1, k2 := rsaKey(t), rsaKey(t)
	writePEM(t, path, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k1))
	rec := &recorder{}
	c, err := New(keyConfig(path), rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Refresh(ctx, "rt")
	form, auth := rec.last(t)
	if h, _ := verify(t, form, auth, &k1.PublicKey, "RS256", "https://as.example/token"); h.KeyID != thumb(t, &k1.PublicKey) {
		t.Fatal("kid of the first key")
	}
	writePEM(t, path, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k2))
	c.Refresh(ctx, "rt")
	form, auth = rec.last(t)
	if h, _ := verify(t, form, auth, &k2.PublicKey, "RS256", "https://as.example/token"); h.KeyID != thumb(t, &k2.PublicKey) {
		t.Fatal("the rotated key is not used")
	}
	n := len(rec.forms)
	os.WriteFile(path, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600)
	_, err = c.Refresh(ctx, "rt")
	if ClassOf(err) != ClientRejected || strings.Contains(err.Error(), "bm90") {
		t.Fatalf("a broken key file: %v", err)
	}
	os.Remove(path)
	_, err = c.Refresh(ctx, "rt")
	if ClassOf(err) != ClientRejected || !strings.Contains(err.Error(), "client_key") {
		t.Fatalf("a missing key file: %v", err)
	}
	if len(rec.forms) != n {
		t.Fatal("a request was sent without client authentication")
	}
}

// TestClientKeyErrors: New refuses a missing or unusable key, and a
// certificate that is not the key's.
func TestClientKeyErrors(t *testing.T) {
	dir := t.TempDir()
	k := rsaKey(t)
	writePEM(t, filepath.Join(dir, "k.pem"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
	writePEM(t, filepath.Join(dir, "other.pem"), "CERTIFICATE", selfSigned(t, rsaKey(t)))
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	writePEM(t, filepath.Join(dir, "small.pem"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))
	os.WriteFile(filepath.Join(dir, "enc.pem"), []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600)
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"missing key", func(c *Config) { c.ClientKeyFile = filepath.Join(dir, "nope.pem") }, "client_key: stat"},
		{"certificate of another key", func(c *Config) { c.ClientCertFile = filepath.Join(dir, "other.pem") }, "client_cert_file does not match client_key"},
		{"small key", func(c *Config) { c.ClientKeyFile = filepath.Join(dir, "small.pem") }, "at least 2048"},
		{"encrypted key", func(c *Config) { c.ClientKeyFile = filepath.Join(dir, "enc.pem") }, "encrypted"},
		{"no key", func(c *Config) { c.ClientKeyFile = "" }, "needs client_key"},
		{"secret too", func(c *Config) { c.ClientSecret = "s" }, "without client_secret"},
		{"key with post", func(c *Config) { c.AuthStyle = AuthPost }, "need auth_style private_key_jwt, not post"},
		{"assertion file with basic", func(c *Config) { c.AuthStyle, c.ClientKeyFile, c.ClientAssertionFile = AuthBasic, "", "/a" }, "client_assertion_file needs auth_style client_assertion"},
		{"client_assertion without file", func(c *Config) { c.AuthStyle, c.ClientKeyFile = AuthClientAssertion, "" }, "needs client_assertion_file"},
		{"client_assertion with key", func(c *Config) { c.AuthStyle, c.ClientAssertionFile = AuthClientAssertion, "/a" }, "not client_assertion"},
		{"unknown style", func(c *Config) { c.AuthStyle = "tls_client_auth" }, "auth_style must be basic, post, private_key_jwt or client_assertion"},
		{"bad audience", func(c *Config) { c.AssertionAudience = "token" }, "assertion_audience must be an absolute URL"},
	} {
		cfg := keyConfig(filepath.Join(dir, "k.pem"))
		tt.mod(&cfg)
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestClientAssertionFile: the file's content, trimmed, is the assertion,
// read again on every request.
func TestClientAssertionFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("first.jwt.value\n"), 0o600)
	cfg := keyConfig("")
	cfg.AuthStyle, cfg.ClientAssertionFile = AuthClientAssertion, path
	rec := &recorder{}
	c, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Exchange(ctx, "code", "v")
	if form, _ := rec.last(t); form.Get("client_assertion") != "first.jwt.value" || form.Get("client_assertion_type") != JWTBearerAssertionType || form.Get("client_id") != "client-1" {
		t.Fatalf("form %v", form)
	}
	os.WriteFile(path, []byte("  second.jwt.value  "), 0o600)
	c.Refresh(ctx, "rt")
	if form, _ := rec.last(t); form.Get("client_assertion") != "second.jwt.value" {
		t.Fatalf("form %v", form)
	}
	os.WriteFile(path, []byte("\n"), 0o600)
	if _, err := c.Refresh(ctx, "rt"); ClassOf(err) != ClientRejected {
		t.Fatalf("an empty assertion file: %v", err)
	}
}

// statusErr is an error of a remote key holder with an HTTP status.
type statusErr int

func (e statusErr) Error() string   { return "status " + http.StatusText(int(e)) }
func (e statusErr) StatusCode() int { return int(e) }

// localSigner is a Signer over a local key, standing in for Vault Transit.
type localSigner struct {
	key  *rsa.PrivateKey
	fail error
}

func (s *localSigner) Public(context.Context) (crypto.PublicKey, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	return &s.key.PublicKey, nil
}

func (s *localSigner) Sign(_ context.Context, pub crypto.PublicKey, alg string, input []byte) ([]byte, error) {
	if !s.key.PublicKey.Equal(pub) {
		return nil, errors.New("not this key")
	}
	h := sha256.Sum256(input)
	if alg == "PS256" {
		return rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	}
	return rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, h[:])
}

// TestPrivateKeyJWTSigner: a Signer signs the assertion; its refusals (4xx)
// are client rejections, its outages transient.
func TestPrivateKeyJWTSigner(t *testing.T) {
	s := &localSigner{key: rsaKey(t)}
	cfg := keyConfig("")
	cfg.ClientKeySigner = s
	rec := &recorder{}
	c, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Refresh(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	form, auth := rec.last(t)
	if h, _ := verify(t, form, auth, &s.key.PublicKey, "RS256", "https://as.example/token"); h.KeyID != thumb(t, &s.key.PublicKey) {
		t.Fatal("kid")
	}
	s.fail = statusErr(http.StatusForbidden)
	if _, err := c.Refresh(ctx, "rt"); ClassOf(err) != ClientRejected {
		t.Fatalf("403: %v", err)
	}
	s.fail = statusErr(http.StatusServiceUnavailable)
	if _, err := c.Refresh(ctx, "rt"); err == nil || ClassOf(err) != Transient {
		t.Fatalf("503: %v", err)
	}
}

// TestAssertionRefused: with an assertion style, the answers Ory Hydra
// gives to an unknown kid and to a replayed jti are client rejections;
// with a secret, invalid_request stays transient as before.
func TestAssertionRefused(t *testing.T) {
	s := &localSigner{key: rsaKey(t)}
	for _, tt := range []struct {
		style  AuthStyle
		status int
		code   string
		want   Class
	}{
		{AuthPrivateKeyJWT, 400, "invalid_request", ClientRejected},
		{AuthPrivateKeyJWT, 400, "jti_known", ClientRejected},
		{AuthPrivateKeyJWT, 401, "invalid_client", ClientRejected},
		{AuthPrivateKeyJWT, 400, "invalid_grant", GrantRejected},
		{AuthPrivateKeyJWT, 503, "invalid_request", Transient},
		{AuthBasic, 400, "invalid_request", Transient},
	} {
		cfg := keyConfig("")
		cfg.AuthStyle = tt.style
		if tt.style == AuthPrivateKeyJWT {
			cfg.ClientKeySigner = s
		}
		rec := &recorder{answer: func() *http.Response {
			return &http.Response{StatusCode: tt.status, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"error":"` + tt.code + `"}`))}
		}}
		c, err := New(cfg, rec)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Refresh(context.Background(), "rt")
		var pe *ProviderError
		if ClassOf(err) != tt.want || !errors.As(err, &pe) || pe.Code != tt.code {
			t.Errorf("%s %d %s: %v", tt.style, tt.status, tt.code, err)
		}
	}
}

// TestPrivateKeyJWTSignerCertificate: a Signer's key may have a
// certificate file, whose thumbprints go into the header; one of another
// key fails the token request as a client rejection, before any request.
func TestPrivateKeyJWTSignerCertificate(t *testing.T) {
	dir := t.TempDir()
	s := &localSigner{key: rsaKey(t)}
	certFile := filepath.Join(dir, "c.pem")
	cert := selfSigned(t, s.key)
	writePEM(t, certFile, "CERTIFICATE", cert)
	cfg := keyConfig("")
	cfg.ClientKeySigner, cfg.ClientCertFile = s, certFile
	rec := &recorder{}
	c, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Refresh(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	form, auth := rec.last(t)
	h, _ := verify(t, form, auth, &s.key.PublicKey, "RS256", "https://as.example/token")
	s256 := sha256.Sum256(cert)
	if h.ExtraHeaders["x5t#S256"] != base64.RawURLEncoding.EncodeToString(s256[:]) {
		t.Fatalf("header %v", h.ExtraHeaders)
	}
	n := len(rec.forms)
	writePEM(t, certFile, "CERTIFICATE", selfSigned(t, rsaKey(t)))
	if _, err := c.Refresh(ctx, "rt"); ClassOf(err) != ClientRejected || !strings.Contains(err.Error(), "client_cert_file does not match client_key") {
		t.Fatalf("a certificate of another key: %v", err)
	}
	if len(rec.forms) != n {
		t.Fatal("a request was sent")
	}
}

// TestClientAuthOtherGrants: a grant made with x/oauth2's clientcredentials
// package through the connector's HTTP client and endpoint (as the other
// grants are) is authenticated by the same layer: the assertion is added,
// no secret is sent, and the grant's own parameters stay.
func TestClientAuthOtherGrants(t *testing.T) {
	s := &localSigner{key: rsaKey(t)}
	cfg := keyConfig("")
	cfg.ClientKeySigner = s
	rec := &recorder{}
	c, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: c.oauth.ClientID, ClientSecret: c.oauth.ClientSecret, TokenURL: c.oauth.Endpoint.TokenURL,
		AuthStyle: c.oauth.Endpoint.AuthStyle, Scopes: []string{"https://graph.microsoft.com/.default"},
		EndpointParams: url.Values{"requested_token_use": {"on_behalf_of"}}}
	if _, err := cc.Token(c.ctx(context.Background())); err != nil {
		t.Fatal(err)
	}
	form, auth := rec.last(t)
	verify(t, form, auth, &s.key.PublicKey, "RS256", "https://as.example/token")
	if form.Get("grant_type") != "client_credentials" || form.Get("requested_token_use") != "on_behalf_of" || form.Get("scope") == "" {
		t.Fatalf("form %v", form)
	}
}
