package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/caddyserver/caddy/v2"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKeyPair writes a PEM RSA key and a self-signed certificate of it.
func writeKeyPair(t *testing.T, dir, name string) (keyFile, certFile string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return keyFile, certFile
}

// TestClientAuthConfig: the client authentication options load when they
// fit together (without the network, Vault Transit included), and each
// misfit is refused at provisioning with an error that names it.
func TestClientAuthConfig(t *testing.T) {
	dir := t.TempDir()
	key, cert := writeKeyPair(t, dir, "graph")
	_, otherCert := writeKeyPair(t, dir, "other")
	assertion := filepath.Join(dir, "token")
	os.WriteFile(assertion, []byte("a.b.c"), 0o600)
	conn := func(body string) string {
		return "public_url http://localhost:8080\nconnector graph {\nprovider microsoft\nclient_id app\n" + body + "\n}"
	}
	vaultStore := "store vault {\naddress http://127.0.0.1:1\ntoken t\n}\n"
	tests := []struct {
		name string
		src  string
		want string // empty: loads
	}{
		{"file key with certificate", global(conn("auth_style private_key_jwt\nclient_key file " + key + "\nclient_cert_file " + cert)), ""},
		{"file key, kid and audience", global(conn("auth_style private_key_jwt\nclient_key file " + key + "\nclient_key_id k1\nassertion_audience https://login.microsoftonline.com/t/oauth2/v2.0/token")), ""},
		{"vault transit", global(vaultStore + conn("auth_style private_key_jwt\nclient_key vault_transit graph-app")), ""},
		{"client assertion", global(conn("auth_style client_assertion\nclient_assertion_file " + assertion)), ""},
		{"missing key file", global(conn("auth_style private_key_jwt\nclient_key file " + filepath.Join(dir, "nope.key"))), "connector graph: client_key: stat"},
		{"certificate of another key", global(conn("auth_style private_key_jwt\nclient_key file " + key + "\nclient_cert_file " + otherCert)), "client_cert_file does not match client_key"},
		{"missing certificate", global(conn("auth_style private_key_jwt\nclient_key file " + key + "\nclient_cert_file " + filepath.Join(dir, "nope.crt"))), "client_cert_file: stat"},
		{"key with post", global(conn("auth_style post\nclient_secret s\nclient_key file " + key)), "need auth_style private_key_jwt, not post"},
		{"key with basic", global(conn("auth_style basic\nclient_secret s\nclient_key file " + key)), "need auth_style private_key_jwt, not basic"},
		{"private_key_jwt without key", global(conn("auth_style private_key_jwt")), "auth_style private_key_jwt needs client_key"},
		{"private_key_jwt with secret", global(conn("auth_style private_key_jwt\nclient_secret s\nclient_key file " + key)), "authenticates without client_secret"},
		{"client_assertion without file", global(conn("auth_style client_assertion")), "auth_style client_assertion needs client_assertion_file"},
		{"vault_transit without the vault store", global(conn("auth_style private_key_jwt\nclient_key vault_transit graph-app")), "client_key vault_transit needs the Vault store"},
		{"bad audience", global(conn("auth_style private_key_jwt\nclient_key file " + key + "\nassertion_audience token")), "assertion_audience must be an absolute URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := load(tt.src)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestClientAuthCaddyfileErrors: malformed client authentication options
// are refused when the Caddyfile is adapted.
func TestClientAuthCaddyfileErrors(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"unknown auth_style", global("connector a {\nauth_style tls_client_auth\n}"), `auth_style must be basic, post, private_key_jwt or client_assertion, got "tls_client_auth"`},
		{"client_key without source", global("connector a {\nclient_key /k.pem\n}"), "client_key takes file <path> or vault_transit <key> [<mount>]"},
		{"client_key unknown source", global("connector a {\nclient_key pkcs11 slot\n}"), "client_key takes file <path>"},
		{"vault_transit arity", global("connector a {\nclient_key vault_transit k m extra\n}"), "client_key takes file <path>"},
		{"client_key_id arity", global("connector a {\nclient_key_id\n}"), "wrong argument count"},
		{"client_assertion_file arity", global("connector a {\nclient_assertion_file a b\n}"), "wrong argument count"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestClientKeyJSON: a client_key with both sources, or none, is refused.
func TestClientKeyJSON(t *testing.T) {
	for _, tt := range []struct{ key, want string }{
		{`{"file":"/k","vault_transit":{"key":"k"}}`, "a file or a vault_transit key, not both"},
		{`{}`, "client_key needs a file or a vault_transit key"},
	} {
		err := loadJSON(`{"apps":{"oauthconn":{"public_url":"http://localhost:8080","connectors":{"a":{"authorization_url":"https://as/a","token_url":"https://as/t","client_id":"x","auth_style":"private_key_jwt","client_key":` + tt.key + `}}}}}`)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.key, err, tt.want)
		}
	}
}

// loadJSON validates a JSON configuration as `caddy validate` does.
func loadJSON(src string) error {
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(src), &cfg); err != nil {
		return err
	}
	return caddy.Validate(&cfg)
}

// TestCallbackClientRejected: when the token endpoint refuses the client
// at the code exchange (RFC 6749 invalid_client), the callback answers
// with the error page saying that the configuration must be fixed (not
// "start again"), stores nothing, and the connection stays
// authorization_required.
func TestCallbackClientRejected(t *testing.T) {
	var calls atomic.Int64
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS700027: Client assertion contains an invalid signature."}`)
	}))
	defer refusing.Close()
	s := startServer(t, testOptions{connector: "token_url " + refusing.URL + "/token"})
	b := newClient()
	state, resp := s.authorize(t, b)
	if state == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	resp, page := s.callback(t, b, state, "good-code")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(page, "refused this connector&#39;s client credentials") ||
		!strings.Contains(page, "invalid_client") || strings.Contains(page, "AADSTS") {
		t.Fatalf("%d %s", resp.StatusCode, page)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d token requests", calls.Load())
	}
	if st := body(t, s); !strings.Contains(st, `"status":"authorization_required"`) {
		t.Fatalf("a refused client connected: %s", st)
	}
	// The state is spent: a second try does not send the code again.
	if resp, _ := s.callback(t, b, state, "good-code"); resp.StatusCode != http.StatusBadRequest || calls.Load() != 1 {
		t.Fatalf("second callback: %d, %d token requests", resp.StatusCode, calls.Load())
	}
}

// TestReadmeMicrosoftCredentials loads each Caddyfile snippet of the
// README's "Certificates and federated credentials" section, as printed,
// with its files made in a temporary directory.
func TestReadmeMicrosoftCredentials(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "### Certificates and federated credentials")
	if start < 0 {
		t.Fatal("the README's section is gone; update this test")
	}
	section := readme[start:]
	// The subsection ends at the next heading of its level or above.
	for _, next := range []string{"\n## ", "\n### "} {
		if end := strings.Index(section[4:], next); end >= 0 {
			section = section[:end+4]
		}
	}
	dir := t.TempDir()
	key, cert := writeKeyPair(t, dir, "graph")
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("a.b.c\n"), 0o600)
	files := strings.NewReplacer("/run/secrets/graph-key.pem", key, "/run/secrets/graph-cert.pem", cert,
		"/run/secrets/graph-transit-cert.pem", cert, "/var/run/secrets/azure/tokens/azure-identity-token", token)
	t.Setenv("MS_TENANT_ID", "contoso.onmicrosoft.com")
	t.Setenv("MS_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
	n := 0
	for rest := section; ; n++ {
		i := strings.Index(rest, "```caddyfile\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```caddyfile\n"):]
		j := strings.Index(rest, "```")
		snippet := files.Replace(rest[:j])
		rest = rest[j:]
		src := global("public_url https://connect.example.com\nstore vault {\naddress http://127.0.0.1:1\ntoken t\n}\n" + snippet)
		if err := load(src); err != nil {
			t.Errorf("snippet %d:\n%s\n%v", n+1, snippet, err)
		}
	}
	if n != 3 {
		t.Fatalf("%d Caddyfile snippets in the section, want 3", n)
	}
}
