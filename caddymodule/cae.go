package caddymodule

import (
	"encoding/base64"
	"strings"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
)

// Claims challenges (Continuous Access Evaluation, Conditional Access
// authentication context). A resource that refuses a token for lacking
// claims answers 401 with
//
//	WWW-Authenticate: Bearer realm="", authorization_uri="…", error="insufficient_claims", claims="<base64 JSON>"
//
// (https://learn.microsoft.com/entra/identity-platform/claims-challenge).
// A refresh cannot satisfy it: the person must sign in again, with the
// claims in the authorization request. So the app gets 401
// authorization_required with the claims and an authorize URL that carries
// them to the provider, through a pending challenge (challenge.go).

// maxClaims bounds a claims challenge's size (decoded).
const maxClaims = 8 << 10

// claimsChallenge returns the claims (compact JSON) of an insufficient_claims
// Bearer challenge, if ch is one.
func claimsChallenge(ch discovery.Challenge) (string, bool) {
	if !strings.EqualFold(ch.Error, "insufficient_claims") || ch.Claims == "" || len(ch.Claims) > maxClaims*4/3+4 {
		return "", false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(ch.Claims)
		if err != nil {
			continue
		}
		if claims, err := connector.ParseClaims(b); err == nil {
			return claims, true
		}
		return "", false
	}
	return "", false
}
