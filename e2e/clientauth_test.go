package e2e

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// The client authentication tests register Hydra clients whose
// token_endpoint_auth_method is private_key_jwt, so that Hydra (fosite)
// checks every client assertion the proxy sends: the signature against the
// client's registered JWKS (inline jwks, or a jwks_uri the test serves),
// iss = sub = client_id, aud = Hydra's token URL, exp, and that no jti is
// used twice. A recorder in front of Hydra keeps what each token request
// carried and how Hydra answered.

// tokenRecord is one token request as Hydra's token endpoint received it.
type tokenRecord struct {
	form   url.Values
	auth   string // the Authorization header
	status int
}

// tokenRecorder forwards to Hydra's public URL and records token requests.
type tokenRecorder struct {
	URL   string
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	recs  []tokenRecord
}

func newTokenRecorder(t *testing.T, h *hydra) *tokenRecorder {
	u, _ := url.Parse(h.PublicURL)
	r := &tokenRecorder{proxy: httputil.NewSingleHostReverseProxy(u)}
	r.URL = serve(t, r)
	return r
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(b))
	req.Body = io.NopCloser(bytes.NewReader(b))
	sw := &recordingWriter{ResponseWriter: w, status: 200}
	r.proxy.ServeHTTP(sw, req)
	r.mu.Lock()
	r.recs = append(r.recs, tokenRecord{form: form, auth: req.Header.Get("Authorization"), status: sw.status})
	r.mu.Unlock()
}

type recordingWriter struct {
	http.ResponseWriter
	status int
}

func (w *recordingWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func (r *tokenRecorder) records() []tokenRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tokenRecord(nil), r.recs...)
}

// count returns how many requests of grant were answered with status (0:
// any status).
func (r *tokenRecorder) count(grant string, status int) int {
	n := 0
	for _, rec := range r.records() {
		if rec.form.Get("grant_type") == grant && (status == 0 || rec.status == status) {
			n++
		}
	}
	return n
}

func (r *tokenRecorder) last(t *testing.T) tokenRecord {
	t.Helper()
	recs := r.records()
	if len(recs) == 0 {
		t.Fatal("no token request")
	}
	return recs[len(recs)-1]
}

// checkAssertions checks that every token request authenticated with an
// assertion and no secret, and that no jti was sent twice; it returns the
// kid of each assertion.
func (r *tokenRecorder) checkAssertions(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	var kids []string
	for i, rec := range r.records() {
		if rec.auth != "" || rec.form.Has("client_secret") {
			t.Fatalf("request %d carried a secret", i)
		}
		if rec.form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			t.Fatalf("request %d: client_assertion_type %q", i, rec.form.Get("client_assertion_type"))
		}
		tok, err := jwt.ParseSigned(rec.form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		var c jwt.Claims
		tok.UnsafeClaimsWithoutVerification(&c)
		if seen[c.ID] {
			t.Fatalf("jti %q was sent twice", c.ID)
		}
		seen[c.ID] = true
		kids = append(kids, tok.Headers[0].KeyID)
	}
	return kids
}

// jwk is the public JWK of key as a client registers it.
func jwk(t *testing.T, pub crypto.PublicKey) jose.JSONWebKey {
	t.Helper()
	k := jose.JSONWebKey{Key: pub, Use: "sig", Algorithm: "RS256"}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	k.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return k
}

// createJWTClient registers a Hydra client that authenticates with
// private_key_jwt (RS256), with the public keys inline (jwks) or at
// jwksURI.
func createJWTClient(t *testing.T, h *hydra, keys []jose.JSONWebKey, jwksURI string) string {
	t.Helper()
	body := map[string]any{
		"grant_types":                     []string{"authorization_code", "refresh_token"},
		"response_types":                  []string{"code"},
		"scope":                           "openid offline_access offline",
		"redirect_uris":                   []string{"http://localhost:9080/oauth/callback"},
		"token_endpoint_auth_method":      "private_key_jwt",
		"token_endpoint_auth_signing_alg": "RS256",
	}
	if jwksURI != "" {
		body["jwks_uri"] = jwksURI
	} else {
		body["jwks"] = jose.JSONWebKeySet{Keys: keys}
	}
	b, _ := json.Marshal(body)
	resp, err := http.Post(h.AdminURL+"/admin/clients", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating the client: %d %s", resp.StatusCode, out)
	}
	var c struct {
		ClientID string `json:"client_id"`
	}
	json.Unmarshal(out, &c)
	return c.ClientID
}

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeKey writes key to path as a PKCS#8 PEM file, replacing it as an
// operator's rotation (or a Kubernetes secret update) does: write aside,
// then rename.
func writeKey(t *testing.T, path string, key *rsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const clientAuthCaddyfile = `{
	admin localhost:2999
	log {
		output file %[5]s
		level DEBUG
	}
	oauthconn {
		public_url http://localhost:9080
		store vault {
			address {env.VAULT_ADDR}
			token %[1]s
			mount secret
			prefix %[2]s
		}
		%[3]s
	}
}

http://localhost:9080 {
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo %[4]s
	}
}
`

// startClientAuthSidecar starts Caddy (caddytest rewrites paths ending in
// .key or .crt, so key files are named .pem), logging at debug level to a
// file that checkLogs reads with the given connectors, its
// Vault store using token (empty: the root token) under prefix.
func startClientAuthSidecar(t *testing.T, token, prefix, connectors, upstream string) (s *sidecar, logFile string) {
	t.Helper()
	env := testservices.Vault(t)
	if token == "" {
		token = env.Token
	}
	logFile = filepath.Join(t.TempDir(), "caddy.log")
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(clientAuthCaddyfile, token, prefix, connectors, upstream, logFile), "caddyfile")
	vc, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(env.Token)
	return &sidecar{base: "http://localhost:9080", prefix: prefix, vault: vc}, logFile
}

// checkLogs checks that no secret (an assertion, a signature, a key's
// base64) is in what Caddy logged so far.
func checkLogs(t *testing.T, logFile string, secrets ...string) {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatal("nothing was logged")
	}
	for _, sec := range secrets {
		if sec != "" && bytes.Contains(b, []byte(sec)) {
			t.Fatalf("the log holds a secret (%d bytes)", len(sec))
		}
	}
}

// assertionSecrets returns the recorded assertions and their signatures.
func (r *tokenRecorder) assertionSecrets() []string {
	var out []string
	for _, rec := range r.records() {
		a := rec.form.Get("client_assertion")
		out = append(out, a, a[strings.LastIndex(a, ".")+1:])
	}
	return out
}

// afterExpiry waits until the stored access token of connector demo has
// expired, and returns the refresh token Vault holds.
func afterExpiry(t *testing.T, s *sidecar) string {
	t.Helper()
	rec := s.stored(t, "demo")
	if rec == nil {
		t.Fatal("Vault holds no token set")
	}
	exp, _ := time.Parse(time.RFC3339, rec["expiry"].(string))
	time.Sleep(time.Until(exp.Add(time.Second)))
	return rec["refresh_token"].(string)
}

// appGet sends the app's request through the proxy.
func appGet(t *testing.T, s *sidecar) (int, string) {
	t.Helper()
	resp, body := newBrowser().do(t, "GET", s.base+"/demo/items", "", "")
	return resp.StatusCode, body
}

// TestPrivateKeyJWTFile: a connector with a PEM key authenticates the code
// exchange and every refresh with a fresh assertion that Hydra accepts; a
// key file rotated to another registered key is used by the next refresh
// without a restart; a key file rotated to a key Hydra does not know makes
// the connector misconfigured (503 connector_misconfigured) without losing
// the connection; an assertion sent a second time is refused by Hydra.
func TestPrivateKeyJWTFile(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	rec := newTokenRecorder(t, h)
	k1, k2, unknown := newRSAKey(t), newRSAKey(t), newRSAKey(t)
	j1, j2 := jwk(t, &k1.PublicKey), jwk(t, &k2.PublicKey)
	clientID := createJWTClient(t, h, []jose.JSONWebKey{j1, j2}, "")
	keyFile := filepath.Join(t.TempDir(), "client-key.pem")
	writeKey(t, keyFile, k1)
	// The proxy reaches Hydra through the recorder, so the assertion's
	// audience must be named: Hydra accepts only its own token URL.
	s, logFile := startClientAuthSidecar(t, "", "e2e-pkjwt-"+hydradev.RandomHex(6), `connector demo {
			authorization_url `+h.PublicURL+`/oauth2/auth
			token_url `+rec.URL+`/oauth2/token
			client_id `+clientID+`
			auth_style private_key_jwt
			client_key file `+keyFile+`
			assertion_audience `+h.PublicURL+`/oauth2/token
			revocation_url `+rec.URL+`/oauth2/revoke
			scopes openid offline_access
			refresh_cooldown 2s
		}`, up.URL)

	connect(t, s, newBrowser())
	if rec.count("authorization_code", 200) != 1 {
		t.Fatalf("code exchanges: %+v", rec.records())
	}
	if st, body := appGet(t, s); st != 200 {
		t.Fatalf("after connecting: %d %s", st, body)
	}
	afterExpiry(t, s)
	if st, body := appGet(t, s); st != 200 || rec.count("refresh_token", 200) != 1 {
		t.Fatalf("after expiry: %d %s, %d refreshes", st, body, rec.count("refresh_token", 200))
	}
	if kids := rec.checkAssertions(t); kids[len(kids)-1] != j1.KeyID {
		t.Fatalf("kids %v, want the first key's %s", kids, j1.KeyID)
	}

	// A replayed assertion: the last one, sent again with the refresh
	// token Vault holds, is refused by Hydra (jti uniqueness), and the
	// refresh token is not spent by it.
	replay := rec.last(t).form.Get("client_assertion")
	rt := s.stored(t, "demo")["refresh_token"].(string)
	resp, err := http.PostForm(h.PublicURL+"/oauth2/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {replay},
	})
	if err != nil {
		t.Fatal(err)
	}
	replayed, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(replayed), "jti_known") {
		t.Fatalf("a replayed assertion: %d %s", resp.StatusCode, replayed)
	}

	// Rotation to the second registered key: no restart.
	writeKey(t, keyFile, k2)
	afterExpiry(t, s)
	if st, body := appGet(t, s); st != 200 || rec.count("refresh_token", 200) != 2 {
		t.Fatalf("after rotating the key: %d %s, %d refreshes", st, body, rec.count("refresh_token", 200))
	}
	if kids := rec.checkAssertions(t); kids[len(kids)-1] != j2.KeyID {
		t.Fatalf("kids %v, want the rotated key's %s", kids, j2.KeyID)
	}

	// Rotation to a key Hydra does not know: Hydra refuses the client,
	// apps are told the connector is misconfigured, and Vault keeps the
	// refresh token.
	writeKey(t, keyFile, unknown)
	rt = afterExpiry(t, s)
	st, body := appGet(t, s)
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "connector_misconfigured") {
		t.Fatalf("with an unregistered key: %d %s", st, body)
	}
	if last := rec.last(t); last.status/100 != 4 || last.form.Get("grant_type") != "refresh_token" {
		t.Fatalf("Hydra answered %d to the refresh with an unregistered key", last.status)
	}
	if got := s.stored(t, "demo"); got == nil || got["refresh_token"] != rt {
		t.Fatal("Vault no longer holds the refresh token after the client was refused")
	}
	// Back to a registered key: the connection works again, nobody
	// authorizes again.
	writeKey(t, keyFile, k1)
	if !waitUntil(20*time.Second, func() bool { st, _ := appGet(t, s); time.Sleep(100 * time.Millisecond); return st == 200 }) {
		t.Fatalf("the connection did not come back with a registered key; token requests: %d", len(rec.records()))
	}
	rec.checkAssertions(t)
	if n := rec.count("authorization_code", 0); n != 1 {
		t.Fatalf("%d code exchanges: somebody had to authorize again", n)
	}
	// Disconnecting revokes the grant, the revocation authenticated by an
	// assertion too (RFC 7009 requests carry no grant_type).
	resp, b := newBrowser().do(t, "DELETE", s.base+"/oauth/connectors/demo", "", "")
	if resp.StatusCode != 200 || !strings.Contains(b, `"revoked":true`) {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, b)
	}
	if last := rec.last(t); last.form.Get("token") == "" || last.status != 200 {
		t.Fatalf("the revocation request: %d", last.status)
	}
	rec.checkAssertions(t)
	var keys []string
	for _, k := range []*rsa.PrivateKey{k1, k2, unknown} {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		keys = append(keys, base64.StdEncoding.EncodeToString(der)[40:100])
	}
	checkLogs(t, logFile, append(rec.assertionSecrets(), keys...)...)
	t.Logf("%d token and revocation requests, each with its own jti", len(rec.records()))
}

// TestPrivateKeyJWTVaultTransit: a connector whose key is a Vault Transit
// key signs its assertions in Vault, through the store's token bound to
// exactly examples/vault-policy.hcl and examples/vault-transit-sign-policy.hcl
// (besides Vault's default policy): the code exchange and the refresh
// work, with the assertion's audience left to its default (the token URL,
// Hydra's). A connector whose Hydra client has another key registered gets
// the callback's error page and nothing stored; one whose Transit key the
// policy does not cover gets the same page, and Hydra sees no request.
func TestPrivateKeyJWTVaultTransit(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	rec := newTokenRecorder(t, h)
	env := testservices.Vault(t)
	root, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(env.Token)
	id := hydradev.RandomHex(6)
	mount := "transit-e2e-" + id
	if err := root.Sys().Mount(mount, &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Sys().Unmount(mount) })
	for _, k := range []string{"graph-app", "not-allowed"} {
		if _, err := root.Logical().Write(mount+"/keys/"+k, map[string]any{"type": "rsa-2048"}); err != nil {
			t.Fatal(err)
		}
	}
	sec, err := root.Logical().Read(mount + "/keys/graph-app")
	if err != nil {
		t.Fatal(err)
	}
	pemText := sec.Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string)
	block, _ := pem.Decode([]byte(pemText))
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	good := createJWTClient(t, h, []jose.JSONWebKey{jwk(t, pub)}, "")
	bad := createJWTClient(t, h, []jose.JSONWebKey{jwk(t, &newRSAKey(t).PublicKey)}, "")

	// The store's token: the documented policies and nothing else.
	storePolicy, err := os.ReadFile("../examples/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	transitPolicy, err := os.ReadFile("../examples/vault-transit-sign-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	transitPolicy = []byte(strings.ReplaceAll(string(transitPolicy), `"transit/`, `"`+mount+`/`))
	for name, p := range map[string][]byte{"e2e-store-" + id: storePolicy, "e2e-transit-" + id: transitPolicy} {
		if err := root.Sys().PutPolicy(name, string(p)); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"e2e-store-" + id, "e2e-transit-" + id}, TTL: "30m"})
	if err != nil {
		t.Fatal(err)
	}
	s, logFile := startClientAuthSidecar(t, tok.Auth.ClientToken, "caddy-oauthconn/e2e-transit-"+id, `connector demo {
			authorization_url `+h.PublicURL+`/oauth2/auth
			token_url `+h.PublicURL+`/oauth2/token
			client_id `+good+`
			auth_style private_key_jwt
			client_key vault_transit graph-app `+mount+`
			scopes openid offline_access
		}
		connector bad {
			authorization_url `+h.PublicURL+`/oauth2/auth
			token_url `+h.PublicURL+`/oauth2/token
			client_id `+bad+`
			auth_style private_key_jwt
			client_key vault_transit graph-app `+mount+`
			scopes openid offline_access
		}
		connector denied {
			authorization_url `+h.PublicURL+`/oauth2/auth
			token_url `+rec.URL+`/oauth2/token
			assertion_audience `+h.PublicURL+`/oauth2/token
			client_id `+good+`
			auth_style private_key_jwt
			client_key vault_transit not-allowed `+mount+`
			scopes openid offline_access
		}`, up.URL)

	connect(t, s, newBrowser())
	if st, body := appGet(t, s); st != 200 {
		t.Fatalf("after connecting: %d %s", st, body)
	}
	rt := afterExpiry(t, s)
	if st, body := appGet(t, s); st != 200 {
		t.Fatalf("after expiry: %d %s", st, body)
	}
	if got := s.stored(t, "demo"); got == nil || got["refresh_token"] == rt {
		t.Fatal("the refresh did not store a rotated refresh token")
	}

	for _, name := range []string{"bad", "denied"} {
		resp, page := newBrowser().do(t, "GET", s.base+"/oauth/connectors/"+name+"/authorize", "", "")
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(page, "refused this connector&#39;s client credentials") {
			t.Fatalf("%s: callback %d %s", name, resp.StatusCode, page)
		}
		if s.record(t, name) != nil {
			t.Fatalf("%s: Vault holds a record after a refused client", name)
		}
	}
	if n := len(rec.records()); n != 0 {
		t.Fatalf("Hydra saw %d token requests of the connector whose key the policy does not allow", n)
	}
	_, status := newBrowser().do(t, "GET", s.base+"/oauth/connectors", "", "")
	if strings.Count(status, `"status":"authorization_required"`) != 2 {
		t.Fatalf("status: %s", status)
	}
	checkLogs(t, logFile, tok.Auth.ClientToken)
}

// federatedIssuer plays the workload's identity provider (Kubernetes'
// service account issuer, say): it serves its public keys as the Hydra
// client's jwks_uri and signs the assertions the test writes to the
// connector's client_assertion_file.
type federatedIssuer struct {
	key      *rsa.PrivateKey
	pub      jose.JSONWebKey
	clientID string
	aud      string
}

func (f *federatedIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{f.pub}})
}

// assertion returns a new assertion valid from nbf for life.
func (f *federatedIssuer) assertion(t *testing.T, nbf time.Time, life time.Duration) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: f.key, KeyID: f.pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: f.clientID, Subject: f.clientID, Audience: jwt.Audience{f.aud}, ID: hydradev.RandomHex(16),
		IssuedAt: jwt.NewNumericDate(nbf), NotBefore: jwt.NewNumericDate(nbf), Expiry: jwt.NewNumericDate(nbf.Add(life)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestClientAssertionFile: a connector with auth_style client_assertion
// sends the content of its client_assertion_file, read again for every
// token request, and Hydra checks it against the jwks_uri the test serves.
// A file not yet rewritten is an assertion used twice, which Hydra refuses
// (jti): apps get 503 connector_misconfigured. An expired one is refused
// too. Vault keeps the refresh token throughout, and the next good file
// brings the connection back.
func TestClientAssertionFile(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	rec := newTokenRecorder(t, h)
	key := newRSAKey(t)
	iss := &federatedIssuer{key: key, pub: jwk(t, &key.PublicKey), aud: h.PublicURL + "/oauth2/token"}
	jwksURI := serve(t, iss) + "/jwks.json"
	iss.clientID = createJWTClient(t, h, nil, jwksURI)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	write := func(a string) string { writeFile(t, file, []byte(a+"\n")); return a }
	first := write(iss.assertion(t, time.Now(), 5*time.Minute))
	s, logFile := startClientAuthSidecar(t, "", "e2e-assertion-"+hydradev.RandomHex(6), `connector demo {
			authorization_url `+h.PublicURL+`/oauth2/auth
			token_url `+rec.URL+`/oauth2/token
			client_id `+iss.clientID+`
			auth_style client_assertion
			client_assertion_file `+file+`
			scopes openid offline_access
			refresh_cooldown 2s
		}`, up.URL)

	connect(t, s, newBrowser())
	if got := rec.last(t); got.form.Get("client_assertion") != first || got.status != 200 || got.form.Get("client_id") != iss.clientID {
		t.Fatalf("the code exchange: %d, assertion from the file: %t", got.status, got.form.Get("client_assertion") == first)
	}
	second := write(iss.assertion(t, time.Now(), 5*time.Minute))
	afterExpiry(t, s)
	if st, body := appGet(t, s); st != 200 {
		t.Fatalf("after expiry: %d %s", st, body)
	}
	if got := rec.last(t); got.form.Get("client_assertion") != second || got.status != 200 {
		t.Fatalf("the refresh: %d, with the rewritten file: %t", got.status, got.form.Get("client_assertion") == second)
	}
	rec.checkAssertions(t)

	// The file is not rewritten: its assertion would be used twice.
	rt := afterExpiry(t, s)
	st, body := appGet(t, s)
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "connector_misconfigured") {
		t.Fatalf("with a used assertion: %d %s", st, body)
	}
	if got := rec.last(t); got.status != http.StatusBadRequest || got.form.Get("client_assertion") != second {
		t.Fatalf("Hydra answered %d to a used assertion", got.status)
	}
	// An expired assertion. Ory Hydra v2.3.0 (fosite v0.49.0) answers it
	// with 500, not invalid_client: its claims check wraps a nil error,
	// so the proxy sees the server failing, which may pass, and answers
	// 503 token_unavailable while it retries with backoff.
	expired := write(iss.assertion(t, time.Now().Add(-10*time.Minute), 5*time.Minute))
	if !waitUntil(20*time.Second, func() bool {
		if st, body := appGet(t, s); st != http.StatusServiceUnavailable {
			t.Fatalf("with an expired assertion: %d %s", st, body)
		}
		time.Sleep(100 * time.Millisecond)
		return rec.last(t).form.Get("client_assertion") == expired
	}) {
		t.Fatal("the expired assertion was not sent once the connector's backoff was over")
	}
	if got := rec.last(t); got.status == http.StatusOK {
		t.Fatal("Hydra accepted an expired assertion")
	}
	if got := s.stored(t, "demo"); got == nil || got["refresh_token"] != rt {
		t.Fatal("Vault no longer holds the refresh token after refused assertions")
	}
	// A fresh assertion: back without anybody authorizing again.
	write(iss.assertion(t, time.Now(), 5*time.Minute))
	if !waitUntil(30*time.Second, func() bool { st, _ := appGet(t, s); time.Sleep(100 * time.Millisecond); return st == 200 }) {
		t.Fatal("the connection did not come back with a fresh assertion")
	}
	if n := rec.count("authorization_code", 0); n != 1 {
		t.Fatalf("%d code exchanges", n)
	}
	checkLogs(t, logFile, rec.assertionSecrets()...)
}
