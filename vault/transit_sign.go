package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// TransitSigner signs with a key of Vault's Transit secrets engine, so that
// the private key never leaves Vault. It implements the connector package's
// Signer for private_key_jwt client assertions. The token it uses needs
// exactly:
//
//	path "<mount>/sign/<key>" { capabilities = ["update"] }
//	path "<mount>/keys/<key>" { capabilities = ["read"] }
type TransitSigner struct {
	client     *api.Client
	mount, key string
	now        func() time.Time

	mu       sync.Mutex
	pub      crypto.PublicKey
	versions map[int]crypto.PublicKey // every version's public key, as last read
	fetched  time.Time
}

// transitKeyTTL is how long the key's public half is used before Vault is
// asked again, so that a rotated Transit key is picked up within it: the
// signer signs with the version whose public key it gave out, so the kid
// always matches the signature.
const transitKeyTTL = time.Minute

// NewTransitSigner signs with key at mount (default "transit") through the
// store's Vault client, with the store's token and login.
func (s *Store) NewTransitSigner(mount, key string) (*TransitSigner, error) {
	if key == "" {
		return nil, errors.New("vault transit: the key name is required")
	}
	mount = strings.Trim(mount, "/")
	if mount == "" {
		mount = "transit"
	}
	return &TransitSigner{client: s.client, mount: mount, key: key, now: time.Now}, nil
}

// Name says which key signs, for errors and logs.
func (t *TransitSigner) Name() string { return t.mount + "/keys/" + t.key }

// Public returns the public key of the Transit key's latest version.
func (t *TransitSigner) Public(ctx context.Context) (crypto.PublicKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pub != nil && t.now().Sub(t.fetched) < transitKeyTTL {
		return t.pub, nil
	}
	sec, err := t.client.Logical().ReadWithContext(ctx, t.mount+"/keys/"+t.key)
	if err != nil {
		return nil, fmt.Errorf("vault transit: reading %s: %w", t.Name(), cleanErr(err))
	}
	if sec == nil || sec.Data == nil {
		return nil, &responseError{status: 404, messages: []string{"no transit key " + t.Name()}}
	}
	version, err := intField(sec.Data["latest_version"])
	if err != nil {
		return nil, fmt.Errorf("vault transit: %s: latest_version: %w", t.Name(), err)
	}
	keys, _ := sec.Data["keys"].(map[string]any)
	versions := make(map[int]crypto.PublicKey, len(keys))
	for v, e := range keys {
		n, err := strconv.Atoi(v)
		entry, _ := e.(map[string]any)
		pemText, _ := entry["public_key"].(string)
		block, _ := pem.Decode([]byte(pemText))
		if err != nil || block == nil {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("vault transit: %s: public key of version %d: %w", t.Name(), n, err)
		}
		versions[n] = pub
	}
	pub := versions[version]
	if pub == nil {
		// Symmetric keys (aes256-gcm96, the default type) have none.
		return nil, &responseError{status: 400, messages: []string{fmt.Sprintf("transit key %s (type %v) has no public key; create it with type rsa-2048 (or rsa-3072, rsa-4096, ecdsa-p256)", t.Name(), sec.Data["type"])}}
	}
	t.pub, t.versions, t.fetched = pub, versions, t.now()
	return pub, nil
}

// Sign signs a JWS signing input with alg (RS256: PKCS #1 v1.5, PS256:
// PSS with a salt as long as the hash, as RFC 7518 section 3.5 requires;
// ES256: R || S) and SHA-256, with the key version whose public key is pub
// (one that Public returned), so that a rotation between Public and Sign
// does not sign with a key the assertion's kid does not name.
func (t *TransitSigner) Sign(ctx context.Context, pub crypto.PublicKey, alg string, input []byte) ([]byte, error) {
	version := 0
	t.mu.Lock()
	for v, p := range t.versions {
		if k, ok := p.(interface{ Equal(crypto.PublicKey) bool }); ok && k.Equal(pub) {
			version = v
		}
	}
	t.mu.Unlock()
	if version == 0 {
		return nil, fmt.Errorf("vault transit: %s has no version with this public key (call Public first)", t.Name())
	}
	data := map[string]any{
		"input":          base64.StdEncoding.EncodeToString(input),
		"hash_algorithm": "sha2-256",
		"key_version":    version,
	}
	switch alg {
	case "RS256":
		data["signature_algorithm"] = "pkcs1v15"
	case "PS256":
		data["signature_algorithm"] = "pss"
		data["salt_length"] = "hash"
	case "ES256":
		data["marshaling_algorithm"] = "jws"
	default:
		return nil, fmt.Errorf("vault transit: unsupported algorithm %s", alg)
	}
	switch pub.(type) {
	case *rsa.PublicKey:
		if alg == "ES256" {
			return nil, errors.New("vault transit: ES256 needs an ecdsa-p256 key")
		}
	case *ecdsa.PublicKey:
		if alg != "ES256" {
			return nil, fmt.Errorf("vault transit: %s needs an RSA key", alg)
		}
	}
	sec, err := t.client.Logical().WriteWithContext(ctx, t.mount+"/sign/"+t.key, data)
	if err != nil {
		return nil, fmt.Errorf("vault transit: signing with %s: %w", t.Name(), cleanErr(err))
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault transit: signing with %s: empty response", t.Name())
	}
	sig, _ := sec.Data["signature"].(string)
	// vault:v<version>:<signature>
	parts := strings.SplitN(sig, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("vault transit: signing with %s: unexpected signature format", t.Name())
	}
	if alg == "ES256" {
		// marshaling_algorithm=jws: already the JWS form, base64url.
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	}
	return base64.StdEncoding.DecodeString(parts[2])
}

func intField(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}
