package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// upstream is the API behind the proxy. Like a real resource server it
// accepts only access tokens that the authorization server says are active
// (by introspection at Hydra), and it records what reached it.
type upstream struct {
	URL   string
	hydra *hydra
	calls atomic.Int64

	mu       sync.Mutex
	seen     []seenRequest
	rejected map[string]bool
}

type seenRequest struct {
	Method, Path, RawQuery, Host string
	Authorization                string
	ProxyAuthorization           string
	Cookie                       string
	XForwardedHost               string
	Body                         string
	Active                       bool
}

func newUpstream(t *testing.T, h *hydra) *upstream {
	u := &upstream{hydra: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: u}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u.URL = "http://" + ln.Addr().String()
	return u
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	s := seenRequest{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
		Authorization: r.Header.Get("Authorization"), ProxyAuthorization: r.Header.Get("Proxy-Authorization"),
		Cookie: r.Header.Get("Cookie"), XForwardedHost: r.Header.Get("X-Forwarded-Host"), Body: string(body),
	}
	if tok, ok := strings.CutPrefix(s.Authorization, "Bearer "); ok {
		active, err := u.hydra.active(tok)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		s.Active = active
	}
	u.mu.Lock()
	u.seen = append(u.seen, s)
	rejected := u.rejected[s.Authorization]
	u.mu.Unlock()
	if !s.Active || rejected || r.URL.Path == "/always401" {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_token","detail":"from the upstream"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Upstream", "yes")
	json.NewEncoder(w).Encode(map[string]any{"ok": true, "path": r.URL.Path, "method": r.Method, "body": string(body)})
}

// reject makes the upstream refuse an access token that the authorization
// server still calls active, as a resource server does once it learns of a
// revocation or rotates its trust.
func (u *upstream) reject(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.rejected == nil {
		u.rejected = map[string]bool{}
	}
	u.rejected["Bearer "+token] = true
}

// last returns the most recent request the upstream saw.
func (u *upstream) last(t *testing.T) seenRequest {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("the upstream saw no request")
	}
	return u.seen[len(u.seen)-1]
}

func (u *upstream) all() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}
