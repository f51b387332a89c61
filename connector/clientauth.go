package connector

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

const (
	// AuthPrivateKeyJWT is private_key_jwt (RFC 7523 section 2.2, OpenID
	// Connect Core section 9): each token request carries a new JWT
	// signed with the client's private key.
	AuthPrivateKeyJWT AuthStyle = "private_key_jwt"
	// AuthClientAssertion sends a JWT issued by someone else (workload
	// identity federation: a Kubernetes service account token, say), read
	// from a file, in the same client_assertion parameter.
	AuthClientAssertion AuthStyle = "client_assertion"
)

// usesAssertion reports whether the style authenticates with a client
// assertion rather than a client secret.
func (s AuthStyle) usesAssertion() bool {
	return s == AuthPrivateKeyJWT || s == AuthClientAssertion
}

// validateClientAuth checks the settings of the assertion styles, and that
// the secret styles are not given a key.
func (c *Config) validateClientAuth() error {
	hasKey := c.ClientKeyFile != "" || c.ClientKeySigner != nil
	switch c.AuthStyle {
	case AuthBasic, AuthPost:
		if hasKey || c.ClientCertFile != "" || c.ClientKeyID != "" {
			return fmt.Errorf("connector %s: client_key, client_key_id and client_cert_file need auth_style private_key_jwt, not %s", c.Name, c.AuthStyle)
		}
		if c.ClientAssertionFile != "" {
			return fmt.Errorf("connector %s: client_assertion_file needs auth_style client_assertion, not %s", c.Name, c.AuthStyle)
		}
		return nil
	case AuthPrivateKeyJWT:
		if !hasKey {
			return fmt.Errorf("connector %s: auth_style private_key_jwt needs client_key", c.Name)
		}
		if c.ClientKeyFile != "" && c.ClientKeySigner != nil {
			return fmt.Errorf("connector %s: give one client_key", c.Name)
		}
		if c.ClientAssertionFile != "" {
			return fmt.Errorf("connector %s: client_assertion_file needs auth_style client_assertion, not private_key_jwt", c.Name)
		}
	case AuthClientAssertion:
		if c.ClientAssertionFile == "" {
			return fmt.Errorf("connector %s: auth_style client_assertion needs client_assertion_file", c.Name)
		}
		if hasKey || c.ClientCertFile != "" || c.ClientKeyID != "" {
			return fmt.Errorf("connector %s: client_key, client_key_id and client_cert_file need auth_style private_key_jwt, not client_assertion", c.Name)
		}
	default:
		return fmt.Errorf("connector %s: auth_style must be basic, post, private_key_jwt or client_assertion, got %q", c.Name, c.AuthStyle)
	}
	if c.ClientSecret != "" {
		return fmt.Errorf("connector %s: auth_style %s authenticates without client_secret; remove it", c.Name, c.AuthStyle)
	}
	if c.AssertionAudience != "" {
		if u, err := url.Parse(c.AssertionAudience); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("connector %s: assertion_audience must be an absolute URL", c.Name)
		}
	}
	return nil
}

// newClientAuth makes the client authentication layer of an assertion
// style, reading the key files (not the network). It returns nil for the
// secret styles, which x/oauth2 handles.
func newClientAuth(cfg Config, base http.RoundTripper) (*clientAuthTransport, error) {
	if !cfg.AuthStyle.usesAssertion() {
		return nil, nil
	}
	t := &clientAuthTransport{base: base, clientID: cfg.ClientID}
	for _, u := range []string{cfg.TokenURL, cfg.RevocationURL} {
		if u != "" {
			t.endpoints = append(t.endpoints, u)
		}
	}
	if cfg.AuthStyle == AuthClientAssertion {
		path := cfg.ClientAssertionFile
		t.assert = func(context.Context) (string, error) { return readAssertionFile(path) }
		return t, nil
	}
	var keys keySource
	if cfg.ClientKeySigner != nil {
		keys = &remoteKey{s: cfg.ClientKeySigner, certPath: cfg.ClientCertFile}
	} else {
		fk, err := newFileKey(cfg.ClientKeyFile, cfg.ClientCertFile)
		if ae, ok := err.(*assertionError); ok {
			// At provisioning: the setting's own words.
			return nil, fmt.Errorf("connector %s: %w", cfg.Name, ae.err)
		} else if err != nil {
			return nil, fmt.Errorf("connector %s: %w", cfg.Name, err)
		}
		keys = fk
	}
	aud := cfg.AssertionAudience
	if aud == "" {
		aud = cfg.TokenURL
	}
	a := &assertionSigner{clientID: cfg.ClientID, audience: aud, keyID: cfg.ClientKeyID,
		pss: cfg.Provider == "microsoft", keys: keys, now: time.Now}
	t.assert = a.assertion
	return t, nil
}

// clientAuthTransport authenticates the client on every request to the
// token and revocation endpoints, whoever makes it (x/oauth2 for the code
// exchange and refresh, clientcredentials for the other grants, Revoke):
// to a POST with a form body it adds client_id, client_assertion_type and
// a client_assertion made for this request, and it removes any client
// secret. Other requests pass unchanged.
type clientAuthTransport struct {
	base      http.RoundTripper
	clientID  string
	endpoints []string
	assert    func(context.Context) (string, error)
}

func (t *clientAuthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || !slices.ContainsFunc(t.endpoints, func(e string) bool { return sameEndpoint(r.URL, e) }) {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	form, ok, err := readForm(r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return t.base.RoundTrip(r)
	}
	assertion, err := t.assert(r.Context())
	if err != nil {
		return nil, err
	}
	form.Del("client_secret")
	form.Set("client_id", t.clientID)
	form.Set("client_assertion_type", JWTBearerAssertionType)
	form.Set("client_assertion", assertion)
	r.Header.Del("Authorization")
	setBody(r, []byte(form.Encode()))
	return t.base.RoundTrip(r)
}

// assertionRefused reports whether a token endpoint's answer to an
// assertion-authenticated request refuses the assertion. RFC 7523 section
// 3.2 says such a refusal is invalid_client, which Classify knows; Ory
// Hydra (fosite) answers invalid_request when the assertion's kid is not
// among the client's keys (a rotated key not yet registered) and
// jti_known when an assertion is used twice (a client_assertion_file not
// yet rewritten). Neither passes by retrying: the client's credentials
// must change.
func assertionRefused(style AuthStyle, pe *ProviderError) bool {
	if !style.usesAssertion() || pe.Status >= 500 {
		return false
	}
	return pe.Code == "invalid_request" || pe.Code == "jti_known"
}
