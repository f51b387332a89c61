package hydradev

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// API is a resource server: it accepts only bearer tokens that Hydra says
// are active, and records every request it sees.
type API struct {
	Hydra Hydra
	calls atomic.Int64

	mu       sync.Mutex
	seen     []Request
	rejected map[string]bool
}

// Request is what the API saw of one request.
type Request struct {
	Method, Path, RawQuery, Host string
	Authorization                string
	ProxyAuthorization           string
	Cookie                       string
	Body                         string
	// Header is every header as received.
	Header http.Header
	// Active is whether Hydra called the bearer token active.
	Active bool
}

// ServeHTTP answers 200 with a JSON echo for an active token, and 401 with
// a JSON error otherwise (and always on /always401).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	s := Request{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
		Authorization: r.Header.Get("Authorization"), ProxyAuthorization: r.Header.Get("Proxy-Authorization"),
		Cookie: r.Header.Get("Cookie"), Body: string(body), Header: r.Header.Clone(),
	}
	if tok, ok := strings.CutPrefix(s.Authorization, "Bearer "); ok {
		active, err := a.Hydra.Active(tok)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		s.Active = active
	}
	a.mu.Lock()
	a.seen = append(a.seen, s)
	rejected := a.rejected[s.Authorization]
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !s.Active || rejected || r.URL.Path == "/always401" {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_token","detail":"from the upstream"}`+"\n")
		return
	}
	if r.URL.Path == "/redirect" {
		// An API that redirects elsewhere: the client must not follow
		// it with the token.
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		return
	}
	w.Header().Set("X-Upstream", "yes")
	json.NewEncoder(w).Encode(map[string]any{"ok": true, "path": r.URL.Path, "method": r.Method, "body": string(body)})
}

// Reject makes the API refuse an access token that Hydra still calls
// active, as a resource server does once it learns of a revocation.
func (a *API) Reject(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rejected == nil {
		a.rejected = map[string]bool{}
	}
	a.rejected["Bearer "+token] = true
}

// Calls returns how many requests the API has seen.
func (a *API) Calls() int64 { return a.calls.Load() }

// Seen returns the requests seen so far.
func (a *API) Seen() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Request(nil), a.seen...)
}
