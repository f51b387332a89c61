package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// hydra is the test's Ory Hydra, with its login and consent app served by
// this process (every browser logs in as "alice").
type hydra struct {
	hydradev.Hydra
}

var (
	loginOnce sync.Once
	loginErr  error
)

func newHydra(t *testing.T) *hydra {
	env := testservices.Hydra(t)
	h := &hydra{hydradev.Hydra{PublicURL: env.PublicURL, AdminURL: env.AdminURL}}
	loginOnce.Do(func() { _, loginErr = h.ServeLogin(env.LoginAddr, "alice") })
	if loginErr != nil {
		t.Fatalf("serving Hydra's login and consent app: %v", loginErr)
	}
	return h
}

func (h *hydra) createClient(t *testing.T, redirectURI, authMethod string) hydradev.Client {
	t.Helper()
	c, err := h.CreateClient(redirectURI, authMethod)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenCounter stands in front of Hydra's token endpoint and counts the
// grants that reach it, by grant type. It forwards everything unchanged.
type tokenCounter struct {
	URL string
	// down makes the token endpoint answer 503 without reaching Hydra,
	// as during an outage.
	down atomic.Bool
	// echo, when set to a status, makes the token endpoint answer it with
	// an error body that repeats the request (refresh token, client
	// secret), as some providers' error pages do.
	echo   atomic.Int64
	mu     sync.Mutex
	grants map[string]int
	total  atomic.Int64
}

func (h *hydra) countTokens(t *testing.T) *tokenCounter {
	target, _ := url.Parse(h.PublicURL)
	tc := &tokenCounter{grants: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	tc.URL = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		tc.mu.Lock()
		tc.grants[form.Get("grant_type")]++
		tc.mu.Unlock()
		tc.total.Add(1)
		if status := int(tc.echo.Load()); status != 0 {
			user, pass, _ := r.BasicAuth()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"refresh token %s of %s:%s is not valid","echo":%q}`,
				form.Get("refresh_token"), user, pass, b)
			return
		}
		if tc.down.Load() {
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		rp.ServeHTTP(w, r)
	}))
	return tc
}

func (c *tokenCounter) count(grant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grants[grant]
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
