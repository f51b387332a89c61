package connector

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Signer makes JWS signatures with a private key that stays elsewhere, such
// as a Vault Transit key. It is all the connector needs of such a key, so
// that the connector package does not depend on where the key lives.
type Signer interface {
	// Public returns the public key of the key that Sign signs with now.
	Public(ctx context.Context) (crypto.PublicKey, error)
	// Sign signs a JWS signing input (RFC 7515 section 5.1) with alg
	// ("RS256", "PS256" or "ES256") and the key whose public half is pub
	// (as Public returned it, so that the assertion's kid names the key
	// that signed it even while the key is being rotated), and returns
	// the JWS signature: for ES256 the 64 bytes R || S of RFC 7518
	// section 3.4.
	Sign(ctx context.Context, pub crypto.PublicKey, alg string, signingInput []byte) ([]byte, error)
}

// keySource is where an assertion's signing key comes from: a PEM file, or
// a Signer.
type keySource interface {
	// current returns the key to sign the next assertion with.
	current(ctx context.Context) (signingKey, error)
}

// signingKey is one state of a client key: the private key (or the Signer
// holding it), its public key and the certificate's thumbprints.
type signingKey struct {
	private crypto.Signer // nil with remote
	remote  Signer
	public  crypto.PublicKey
	// x5tS256 and x5t are the SHA-256 and SHA-1 thumbprints of the
	// certificate's DER encoding, base64url; empty without a certificate.
	x5tS256, x5t string
}

// fileKey is a private key in a PEM file, with an optional certificate. It
// is read again when either file changes, so that a rotated key is used by
// the next token request without a restart. Checking costs a stat of each
// file per token request; the files are read (and hashed) only when their
// size or modification time changed.
type fileKey struct {
	keyPath, certPath string

	mu       sync.Mutex
	key      fileStamp
	cert     fileStamp
	loaded   signingKey
	loadedOK bool
}

// fileStamp identifies a file's content cheaply (size and modification
// time) and surely (hash of the content).
type fileStamp struct {
	size    int64
	modTime time.Time
	sum     [sha256.Size]byte
}

// newFileKey reads the key (and certificate) files and checks them.
func newFileKey(keyPath, certPath string) (*fileKey, error) {
	k := &fileKey{keyPath: keyPath, certPath: certPath}
	if _, err := k.current(context.Background()); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *fileKey) current(context.Context) (signingKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keyPEM, keyChanged, err := readIfChanged(k.keyPath, &k.key)
	if err != nil {
		return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_key: %w", err)}
	}
	certPEM, certChanged := []byte(nil), false
	if k.certPath != "" {
		certPEM, certChanged, err = readIfChanged(k.certPath, &k.cert)
		if err != nil {
			return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_cert_file: %w", err)}
		}
	}
	if k.loadedOK && !keyChanged && !certChanged {
		return k.loaded, nil
	}
	if keyPEM == nil {
		// The certificate changed alone: the key is unchanged on disk.
		if keyPEM, err = os.ReadFile(k.keyPath); err != nil {
			return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_key: %w", err)}
		}
	}
	if k.certPath != "" && certPEM == nil {
		if certPEM, err = os.ReadFile(k.certPath); err != nil {
			return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_cert_file: %w", err)}
		}
	}
	sk, err := parseKeyAndCert(keyPEM, certPEM)
	if err != nil {
		// Keep the stamps unset so that the next request tries again
		// (a rotation may have written one file and not yet the other).
		k.key, k.cert, k.loadedOK = fileStamp{}, fileStamp{}, false
		return signingKey{}, &assertionError{permanent: true, err: err}
	}
	k.loaded, k.loadedOK = sk, true
	return sk, nil
}

// readIfChanged returns the file's content if it differs from what st
// describes (and updates st), or nil if it is the same.
func readIfChanged(path string, st *fileStamp) ([]byte, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false, err
	}
	if fi.Size() == st.size && fi.ModTime().Equal(st.modTime) && st.sum != ([sha256.Size]byte{}) {
		return nil, false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	sum := sha256.Sum256(b)
	changed := sum != st.sum
	*st = fileStamp{size: fi.Size(), modTime: fi.ModTime(), sum: sum}
	if !changed {
		return nil, false, nil
	}
	return b, true, nil
}

// parseKeyAndCert parses a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)
// and, if given, a PEM certificate, which must be the key's.
func parseKeyAndCert(keyPEM, certPEM []byte) (signingKey, error) {
	priv, err := parsePrivateKey(keyPEM)
	if err != nil {
		return signingKey{}, err
	}
	sk := signingKey{private: priv, public: priv.Public()}
	if certPEM == nil {
		return sk, nil
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return signingKey{}, err
	}
	if !samePublicKey(cert.PublicKey, sk.public) {
		return signingKey{}, errors.New("client_cert_file does not match client_key")
	}
	sk.x5tS256, sk.x5t = thumbprints(cert.Raw)
	return sk, nil
}

// parsePrivateKey reads the first private key block of a PEM file. Errors
// name the block type at most, never any of the key's bytes.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("client_key: no PEM private key found (want PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\")")
		}
		if block.Headers["Proc-Type"] != "" || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("client_key: the private key is encrypted; give an unencrypted PEM key (protect the file instead, or use vault_transit)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue // EC PARAMETERS, a certificate bundled in, …
		}
		if err != nil {
			return nil, fmt.Errorf("client_key: the %s block cannot be parsed", block.Type)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("client_key: the RSA key has %d bits; at least 2048 are needed", k.N.BitLen())
			}
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("client_key: %T keys are not supported (RSA or EC P-256)", key)
	}
}

func parseCertificate(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("client_cert_file: no PEM certificate found")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("client_cert_file: %w", err)
		}
		return cert, nil
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && ka.Equal(b)
}

// remoteKey is a key held by a Signer, with an optional certificate file
// (read again when it changes) that must be the key's.
type remoteKey struct {
	s        Signer
	certPath string

	mu   sync.Mutex
	cert fileStamp
	x5t  [2]string // x5t#S256, x5t of the certificate read last
	pub  crypto.PublicKey
}

func (r *remoteKey) current(ctx context.Context) (signingKey, error) {
	pub, err := r.s.Public(ctx)
	if err != nil {
		return signingKey{}, classifyRemote(fmt.Errorf("client_key: getting the public key: %w", err))
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_key: %T keys are not supported (RSA or EC P-256)", pub)}
	}
	sk := signingKey{remote: r.s, public: pub}
	if r.certPath == "" {
		return sk, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	certPEM, changed, err := readIfChanged(r.certPath, &r.cert)
	if err != nil {
		return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_cert_file: %w", err)}
	}
	if changed || !samePublicKey(r.pub, pub) {
		if certPEM == nil {
			if certPEM, err = os.ReadFile(r.certPath); err != nil {
				return signingKey{}, &assertionError{permanent: true, err: fmt.Errorf("client_cert_file: %w", err)}
			}
		}
		cert, err := parseCertificate(certPEM)
		if err == nil && !samePublicKey(cert.PublicKey, pub) {
			err = errors.New("client_cert_file does not match client_key")
		}
		if err != nil {
			r.cert, r.pub = fileStamp{}, nil
			return signingKey{}, &assertionError{permanent: true, err: err}
		}
		s256, s1 := thumbprints(cert.Raw)
		r.x5t, r.pub = [2]string{s256, s1}, pub
	}
	sk.x5tS256, sk.x5t = r.x5t[0], r.x5t[1]
	return sk, nil
}

// classifyRemote marks an error of a Signer permanent when the key's
// holder answered with a 4xx status (permission denied, no such key): it
// will not pass until the configuration or the policy is fixed. Network
// errors and 5xx may pass.
func classifyRemote(err error) error {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) && sc.StatusCode() >= 400 && sc.StatusCode() < 500 {
		return &assertionError{permanent: true, err: err}
	}
	return &assertionError{err: err}
}

// assertionError is a failure to authenticate the client before any
// request was sent: a key that cannot be read, a signer that refuses.
// Permanent ones count as the client being rejected (a configuration
// problem); the others as transient.
type assertionError struct {
	permanent bool
	err       error
}

func (e *assertionError) Error() string { return "client authentication: " + e.err.Error() }
func (e *assertionError) Unwrap() error { return e.err }

// readAssertionFile returns the trimmed content of a client assertion file
// (such as a projected Kubernetes service account token). It is read on
// every token request: its writer replaces it before it expires.
func readAssertionFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &assertionError{permanent: true, err: fmt.Errorf("client_assertion_file: %w", err)}
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", &assertionError{permanent: true, err: errors.New("client_assertion_file: the file is empty")}
	}
	return string(b), nil
}
