package discovery

import (
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// Challenge is what a resource's Bearer challenge (RFC 6750 section 3,
// RFC 9728 section 5.1) says.
type Challenge struct {
	// ResourceMetadata is the URL of the resource's metadata.
	ResourceMetadata string
	// Error is the error code, such as invalid_token or insufficient_scope.
	Error string
	// Scope is the scope the resource asks for (space-separated).
	Scope string
}

// ParseChallenge reads the Bearer challenge of a response's
// WWW-Authenticate headers. A response without one yields the zero value.
func ParseChallenge(h http.Header) Challenge {
	challenges, err := oauthex.ParseWWWAuthenticate(h.Values("WWW-Authenticate"))
	if err != nil {
		return Challenge{}
	}
	for _, c := range challenges {
		if !strings.EqualFold(c.Scheme, "bearer") {
			continue
		}
		return Challenge{ResourceMetadata: c.Params["resource_metadata"], Error: c.Params["error"], Scope: c.Params["scope"]}
	}
	return Challenge{}
}
