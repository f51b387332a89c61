package hydradev

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
)

// TokenCounter stands in front of a token endpoint (Hydra's) and counts the
// grants that reach it, by grant type, forwarding everything unchanged
// unless told to play an outage or an echoing error page.
type TokenCounter struct {
	// Down makes it answer 503 without forwarding, as during an outage.
	Down atomic.Bool
	// Echo, when set to a status, makes it answer that status with an
	// error body repeating the request (refresh token, client secret), as
	// some providers' error pages do.
	Echo atomic.Int64

	proxy  *httputil.ReverseProxy
	total  atomic.Int64
	mu     sync.Mutex
	grants map[string]int
}

// NewTokenCounter forwards to target (Hydra's public URL).
func NewTokenCounter(target string) (*TokenCounter, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	return &TokenCounter{proxy: httputil.NewSingleHostReverseProxy(u), grants: map[string]int{}}, nil
}

func (c *TokenCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	c.mu.Lock()
	c.grants[form.Get("grant_type")]++
	c.mu.Unlock()
	c.total.Add(1)
	if status := int(c.Echo.Load()); status != 0 {
		user, pass, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"refresh token %s of %s:%s is not valid","echo":%q}`,
			form.Get("refresh_token"), user, pass, b)
		return
	}
	if c.Down.Load() {
		http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	c.proxy.ServeHTTP(w, r)
}

// Count returns how many requests of a grant type arrived.
func (c *TokenCounter) Count(grant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grants[grant]
}

// Total returns how many requests arrived.
func (c *TokenCounter) Total() int64 { return c.total.Load() }
