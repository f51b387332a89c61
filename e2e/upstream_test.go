package e2e

import (
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
)

// upstream is the API behind the proxy: a resource server that accepts only
// access tokens Hydra calls active.
type upstream struct {
	*hydradev.API
	URL string
}

func newUpstream(t *testing.T, h *hydra) *upstream {
	api := &hydradev.API{Hydra: h.Hydra}
	return &upstream{API: api, URL: serve(t, api)}
}

// last returns the most recent request the upstream saw.
func (u *upstream) last(t *testing.T) hydradev.Request {
	t.Helper()
	seen := u.Seen()
	if len(seen) == 0 {
		t.Fatal("the upstream saw no request")
	}
	return seen[len(seen)-1]
}
