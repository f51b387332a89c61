package e2e

import (
	"net"
	"net/http"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// hydra is the test's Ory Hydra; scripts/services.sh serves its login and
// consent app (every browser logs in as "alice").
type hydra struct {
	hydradev.Hydra
}

func newHydra(t *testing.T) *hydra {
	env := testservices.Hydra(t)
	return &hydra{hydradev.Hydra{PublicURL: env.PublicURL, AdminURL: env.AdminURL}}
}

func (h *hydra) createClient(t *testing.T, redirectURI, authMethod string) hydradev.Client {
	t.Helper()
	c, err := h.CreateClient(redirectURI, authMethod)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenCounter counts the grants reaching Hydra's token endpoint; URL is
// what the sidecar's token_url points at.
type tokenCounter struct {
	*hydradev.TokenCounter
	URL string
}

func (h *hydra) countTokens(t *testing.T) *tokenCounter {
	c, err := hydradev.NewTokenCounter(h.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	return &tokenCounter{TokenCounter: c, URL: serve(t, c)}
}

// serve serves h on a loopback port until the test ends and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
