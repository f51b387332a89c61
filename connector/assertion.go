package connector

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AssertionLifetime is how long a client assertion is valid. RFC 7523
// leaves it to the client; Microsoft's certificate-credentials document
// asks for "5-10 minutes after nbf" at most. Every token request gets a
// new one, so it only has to outlive the request.
const AssertionLifetime = 5 * time.Minute

// JWTBearerAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 section 2.2).
const JWTBearerAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionSigner makes private_key_jwt client assertions (RFC 7523
// section 3, OpenID Connect Core section 9): iss and sub are the client ID,
// aud the authorization server's token endpoint (or the configured
// audience), jti a fresh random value, iat and nbf now, exp
// AssertionLifetime later.
type assertionSigner struct {
	clientID string
	audience string
	keyID    string // configured kid; empty: the RFC 7638 thumbprint
	// pss signs RSA keys with PS256 instead of RS256 (the microsoft
	// preset, see algorithm).
	pss  bool
	keys keySource
	now  func() time.Time
}

// assertion returns a new signed client assertion. Its errors never carry
// key material or the assertion.
func (a *assertionSigner) assertion(ctx context.Context) (string, error) {
	key, err := a.keys.current(ctx)
	if err != nil {
		return "", err
	}
	alg, err := algorithm(key.public, a.pss)
	if err != nil {
		return "", &assertionError{permanent: true, err: err}
	}
	kid := a.keyID
	if kid == "" {
		if kid, err = jwkThumbprint(key.public); err != nil {
			return "", &assertionError{permanent: true, err: err}
		}
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if key.x5tS256 != "" {
		opts = opts.WithHeader("x5t#S256", key.x5tS256).WithHeader("x5t", key.x5t)
	}
	var signingKey any = jose.JSONWebKey{Key: key.private, KeyID: kid, Algorithm: string(alg)}
	if key.remote != nil {
		signingKey = &opaque{ctx: ctx, s: key.remote, pub: jose.JSONWebKey{Key: key.public, KeyID: kid, Algorithm: string(alg)}}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: signingKey}, opts)
	if err != nil {
		return "", &assertionError{permanent: true, err: fmt.Errorf("making the signer: %w", err)}
	}
	jti, err := newJTI()
	if err != nil {
		return "", &assertionError{err: err}
	}
	now := a.now().Truncate(time.Second)
	claims := jwt.Claims{
		Issuer:    a.clientID,
		Subject:   a.clientID,
		Audience:  jwt.Audience{a.audience},
		ID:        jti,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		var ae *assertionError
		if errors.As(err, &ae) {
			return "", ae
		}
		return "", &assertionError{err: fmt.Errorf("signing the client assertion: %w", err)}
	}
	return s, nil
}

// algorithm picks the JWS algorithm for a key: ES256 for EC P-256 keys;
// for RSA keys RS256 (RFC 7518's recommended algorithm, OpenID Connect's
// default for private_key_jwt), or PS256 with pss. The microsoft preset
// sets pss: Microsoft's current certificate-credentials document
// (https://learn.microsoft.com/entra/identity-platform/certificate-credentials)
// says the assertion's alg "should be PS256" with the x5t#S256 header, for
// the v2.0 token endpoint the preset uses; its earlier version asked for
// RS256 with x5t, which Entra still accepts. Both thumbprints are sent.
func algorithm(pub crypto.PublicKey, pss bool) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if pss {
			return jose.PS256, nil
		}
		return jose.RS256, nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return jose.ES256, nil
		}
		return "", fmt.Errorf("client_key: EC keys must be on P-256 (ES256), this one is on %s", k.Curve.Params().Name)
	}
	return "", fmt.Errorf("client_key: %T keys are not supported (RSA or EC P-256)", pub)
}

// jwkThumbprint is the RFC 7638 thumbprint (SHA-256, base64url) of a
// public key: the assertion's default kid, which is also what the README
// tells operators to register.
func jwkThumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("client_key: computing the key's thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// thumbprints returns the x5t#S256 (SHA-256) and x5t (SHA-1) thumbprints of
// a certificate's DER encoding (RFC 7515 sections 4.1.7 and 4.1.8).
func thumbprints(der []byte) (s256, s1 string) {
	a := sha256.Sum256(der)
	b := sha1.Sum(der)
	return base64.RawURLEncoding.EncodeToString(a[:]), base64.RawURLEncoding.EncodeToString(b[:])
}

// newJTI returns 128 random bits, base64url: unique per assertion, which
// servers such as Ory Hydra enforce (a jti is accepted once).
func newJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making the assertion's jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// opaque adapts a Signer to go-jose for one assertion: go-jose computes
// the JWS signing input and the Signer signs it where the key lives.
type opaque struct {
	ctx context.Context
	s   Signer
	pub jose.JSONWebKey
}

func (o *opaque) Public() *jose.JSONWebKey { return &o.pub }

func (o *opaque) Algs() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256}
}

func (o *opaque) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	sig, err := o.s.Sign(o.ctx, o.pub.Key, string(alg), payload)
	if err != nil {
		return nil, classifyRemote(fmt.Errorf("client_key: signing: %w", err))
	}
	return sig, nil
}

// Interface guard.
var _ jose.OpaqueSigner = (*opaque)(nil)
