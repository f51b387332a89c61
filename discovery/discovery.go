// Package discovery finds out how to authorize against a self-describing
// protected resource, such as a remote MCP server: the resource's metadata
// (RFC 9728) names its authorization server, whose metadata (RFC 8414, or
// OpenID Connect Discovery) names the endpoints. It follows the look-up
// order of the MCP authorization specification and validates every
// document it fetches, so that a connector configured with nothing but a
// resource URL cannot be steered to another server. The fetching and the
// document types are the official MCP Go SDK's (oauthex); what is checked,
// and in which order locations are tried, is this package's.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
)

// ErrFailed is wrapped by every error that means discovery found something
// it must refuse, or nothing at all: the connector cannot be used until the
// resource or its authorization server is fixed.
var ErrFailed = errors.New("discovery failed")

// Result is what discovery found for a resource.
type Result struct {
	// Resource is the protected resource's identifier, equal to the
	// configured resource URL.
	Resource string
	// ResourceMetadataURL is where the resource's metadata was found.
	ResourceMetadataURL string
	// Issuer is the authorization server's issuer identifier.
	Issuer string
	// AuthURL, TokenURL, RegistrationURL and RevocationURL are the
	// authorization server's endpoints; the last two may be empty.
	AuthURL, TokenURL, RegistrationURL, RevocationURL string
	// ScopesSupported are the resource's scopes (RFC 9728), used when the
	// connector names none.
	ScopesSupported []string
	// ISSParameterSupported says the server sends iss in authorization
	// responses (RFC 9207).
	ISSParameterSupported bool
	// ClientIDMetadataDocumentSupported says the server accepts an HTTPS
	// URL serving the client's metadata as its client_id.
	ClientIDMetadataDocumentSupported bool
	// AuthMethods are the token endpoint's client authentication methods.
	AuthMethods []string
	// FetchedAt is when the documents were fetched.
	FetchedAt time.Time
}

// Discover fetches and validates the resource's metadata and its
// authorization server's. challengeURL is the resource_metadata URL of a
// 401 challenge the resource answered, if one was seen; without it, the
// resource is asked once without credentials for its challenge, then the
// well-known locations are tried. client makes every request.
func Discover(ctx context.Context, client *http.Client, resource, challengeURL string) (*Result, error) {
	if err := checkEndpoint("resource", resource); err != nil {
		return nil, err
	}
	if challengeURL == "" {
		challengeURL = probeChallenge(ctx, client, resource)
	}
	prm, prmURL, err := resourceMetadata(ctx, client, resource, challengeURL)
	if err != nil {
		return nil, err
	}
	if len(prm.AuthorizationServers) == 0 {
		return nil, fmt.Errorf("%w: the resource metadata at %s names no authorization server", ErrFailed, prmURL)
	}
	issuer := prm.AuthorizationServers[0]
	asm, err := serverMetadata(ctx, client, issuer)
	if err != nil {
		return nil, err
	}
	res := &Result{
		Resource:                          resource,
		ResourceMetadataURL:               prmURL,
		Issuer:                            asm.Issuer,
		AuthURL:                           asm.AuthorizationEndpoint,
		TokenURL:                          asm.TokenEndpoint,
		RegistrationURL:                   asm.RegistrationEndpoint,
		RevocationURL:                     asm.RevocationEndpoint,
		ScopesSupported:                   prm.ScopesSupported,
		ISSParameterSupported:             asm.AuthorizationResponseIssParameterSupported,
		ClientIDMetadataDocumentSupported: asm.ClientIDMetadataDocumentSupported,
		AuthMethods:                       asm.TokenEndpointAuthMethodsSupported,
		FetchedAt:                         time.Now(),
	}
	return res, res.validate()
}

// validate refuses what a connector must not use: endpoints that are not
// https (but on a loopback host), and a server without PKCE S256.
func (r *Result) validate() error {
	for _, e := range []struct{ name, v string }{
		{"authorization_endpoint", r.AuthURL}, {"token_endpoint", r.TokenURL},
		{"registration_endpoint", r.RegistrationURL}, {"revocation_endpoint", r.RevocationURL},
	} {
		if e.v == "" && (e.name == "registration_endpoint" || e.name == "revocation_endpoint") {
			continue
		}
		if e.v == "" {
			return fmt.Errorf("%w: the authorization server %s has no %s", ErrFailed, r.Issuer, e.name)
		}
		if err := checkEndpoint(e.name, e.v); err != nil {
			return err
		}
	}
	return nil
}

// checkEndpoint requires an absolute https URL, or http on a loopback host.
func checkEndpoint(name, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%w: %s %q is not an absolute http(s) URL", ErrFailed, name, raw)
	}
	if !connector.SecureOrLoopback(u) {
		return fmt.Errorf("%w: %s %s is plain http on a host that is not loopback", ErrFailed, name, raw)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: %s %s has a fragment", ErrFailed, name, raw)
	}
	return nil
}

// probeChallenge asks the resource, without credentials, for its 401
// challenge, and returns the resource_metadata URL it names, if any. Any
// failure leaves the well-known locations to try.
func probeChallenge(ctx context.Context, client *http.Client, resource string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, resource, nil)
	if err != nil {
		return ""
	}
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusUnauthorized {
		return ""
	}
	return ParseChallenge(resp.Header).ResourceMetadata
}

// resourceMetadata tries, in the MCP specification's order, the
// challenge's URL, then the well-known location with the resource's path,
// then at the root. The first document found must be the resource's own.
func resourceMetadata(ctx context.Context, client *http.Client, resource, challengeURL string) (*oauthex.ProtectedResourceMetadata, string, error) {
	u, _ := url.Parse(resource)
	origin := u.Scheme + "://" + u.Host
	var candidates []string
	if challengeURL != "" {
		if err := checkEndpoint("resource_metadata", challengeURL); err != nil {
			return nil, "", err
		}
		candidates = append(candidates, challengeURL)
	}
	if p := strings.TrimRight(u.EscapedPath(), "/"); p != "" {
		candidates = append(candidates, origin+"/.well-known/oauth-protected-resource"+p)
	}
	candidates = append(candidates, origin+"/.well-known/oauth-protected-resource")
	var errs []string
	for _, loc := range candidates {
		prm, err := oauthex.GetProtectedResourceMetadata(ctx, loc, resource, client)
		if err == nil {
			return prm, loc, nil
		}
		if strings.Contains(err.Error(), "got metadata resource") {
			return nil, "", fmt.Errorf("%w: the resource metadata at %s is for another resource (configured %s)", ErrFailed, loc, resource)
		}
		errs = append(errs, loc+": "+shorten(err))
	}
	return nil, "", fmt.Errorf("%w: no protected resource metadata found (%s)", ErrFailed, strings.Join(errs, "; "))
}

// serverMetadata tries RFC 8414's location with path insertion, then
// OpenID Connect Discovery's with path insertion and appended, as the MCP
// specification orders them. The document's issuer must be the one the
// resource named (RFC 8414 section 3.3), and it must offer PKCE S256.
func serverMetadata(ctx context.Context, client *http.Client, issuer string) (*oauthex.AuthServerMeta, error) {
	if err := checkEndpoint("authorization server", issuer); err != nil {
		return nil, err
	}
	u, _ := url.Parse(issuer)
	origin := u.Scheme + "://" + u.Host
	p := strings.TrimRight(u.EscapedPath(), "/")
	candidates := []string{origin + "/.well-known/oauth-authorization-server" + p}
	if p != "" {
		candidates = append(candidates, origin+"/.well-known/openid-configuration"+p)
	}
	candidates = append(candidates, origin+p+"/.well-known/openid-configuration")
	var errs []string
	for _, loc := range candidates {
		asm, err := oauthex.GetAuthServerMeta(ctx, loc, issuer, client)
		switch {
		case err != nil && strings.Contains(err.Error(), "does not match issuer"):
			return nil, fmt.Errorf("%w: the authorization server metadata at %s names another issuer than %s", ErrFailed, loc, issuer)
		case err != nil && strings.Contains(err.Error(), "does not implement PKCE"):
			return nil, fmt.Errorf("%w: the authorization server %s does not support PKCE S256", ErrFailed, issuer)
		case err != nil && badEndpoint(err) != "":
			return nil, fmt.Errorf("%w: the authorization server metadata at %s: %s is not https (plain http only on a loopback host)", ErrFailed, loc, badEndpoint(err))
		case err != nil:
			errs = append(errs, loc+": "+shorten(err))
		case asm == nil:
			errs = append(errs, loc+": not found")
		case !slices.Contains(asm.CodeChallengeMethodsSupported, "S256"):
			return nil, fmt.Errorf("%w: the authorization server %s does not support PKCE S256", ErrFailed, issuer)
		default:
			return asm, nil
		}
	}
	return nil, fmt.Errorf("%w: no authorization server metadata found for %s (%s)", ErrFailed, issuer, strings.Join(errs, "; "))
}

// badEndpoint returns the endpoint the SDK refused in a fetched document,
// if that is what err says.
func badEndpoint(err error) string {
	for _, name := range []string{"authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "jwks_uri", "introspection_endpoint"} {
		if strings.HasPrefix(err.Error(), name+":") {
			return name
		}
	}
	return ""
}

// shorten keeps an error's message to one readable line.
func shorten(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
