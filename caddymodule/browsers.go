package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/net/http/httpguts"
)

// browserGate keeps web pages away from the connection. The proxy attaches
// the connection's token to whatever reaches it, so a page the operator
// visits, on any site, could otherwise call it through the operator's
// browser (or, after a DNS rebinding, as a "same-origin" page). Browsers
// mark their requests: Origin on every cross-origin and every non-GET
// request, and Sec-Fetch-Site, -Dest (and -User) on every request to a
// loopback or https address. Server-side clients send none of them, with
// one exception that is allowed through: Node.js's fetch sends
// Sec-Fetch-Mode alone, which no browser does.
type browserGate struct {
	// origins are the allowed origins, normalised as browsers send them.
	origins map[string]bool
}

// newBrowserGate checks and normalises the allow_browsers origins.
func newBrowserGate(allowed []string) (*browserGate, error) {
	g := &browserGate{origins: map[string]bool{}}
	repl := caddy.NewReplacer()
	for _, raw := range allowed {
		o, err := normaliseOrigin(repl.ReplaceKnown(raw, ""))
		if err != nil {
			return nil, fmt.Errorf("allow_browsers: %w", err)
		}
		g.origins[o] = true
	}
	return g, nil
}

// normaliseOrigin turns scheme://host[:port] into the form a browser's
// Origin header has: lower case, without the scheme's default port.
func normaliseOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || strings.TrimRight(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q is not an origin such as https://app.example.com", raw)
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if p := u.Port(); (scheme == "https" && p == "443") || (scheme == "http" && p == "80") {
		host = strings.TrimSuffix(host, ":"+p)
	}
	return scheme + "://" + host, nil
}

// fromBrowser reports whether r was sent by a web browser.
// Browsers send Origin, or the fetch metadata headers Sec-Fetch-Site and
// -Dest (and -User on navigations); server-side clients send none of them
// (Node.js's fetch sends Sec-Fetch-Mode alone, which is not looked at).
// Four look-ups, not a walk over every header, on every proxied request.
func fromBrowser(r *http.Request) bool {
	h := r.Header
	return has(h, "Origin") || has(h, "Sec-Fetch-Site") || has(h, "Sec-Fetch-Dest") || has(h, "Sec-Fetch-User")
}

// has reports whether h has the (canonical) key, even with no value.
func has(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}

// check decides about r before anything else happens to it. It returns the
// allowed origin r comes from ("" for a server-side client) and whether
// the request may go on; when it may not, it has answered: 403 for a
// browser whose origin is not allowed, or the answer to an allowed
// origin's preflight. Nothing is sent upstream in either case.
func (g *browserGate) check(w http.ResponseWriter, r *http.Request, connector string) (origin string, proceed bool) {
	if !fromBrowser(r) {
		return "", true
	}
	origin = r.Header.Get("Origin")
	if !g.origins[origin] {
		w.Header().Set("Vary", "Origin")
		writeJSON(w, http.StatusForbidden, apiError{Error: "browser_request_refused", Connector: connector,
			Message: "web browsers may not use this proxy; list the page's origin in allow_browsers to let it"})
		return "", false
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		g.preflight(w, r, origin)
		return "", false
	}
	return origin, true
}

// Bounds on what a preflight may ask for: generous for real pages, small
// enough that the answer stays small.
const (
	maxPreflightHeaders = 64
	maxPreflightName    = 128
)

// preflight answers a CORS preflight of an allowed origin: the method and
// the headers it asked for (valid names only, within bounds), no
// credentials. The upstream never sees preflights.
func (g *browserGate) preflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	h.Set("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Origin", origin)
	if m := r.Header.Get("Access-Control-Request-Method"); len(m) <= maxPreflightName && httpguts.ValidHeaderFieldName(m) {
		h.Set("Access-Control-Allow-Methods", m)
	}
	var names []string
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "" && len(name) <= maxPreflightName && httpguts.ValidHeaderFieldName(name) && len(names) < maxPreflightHeaders {
				names = append(names, name)
			}
		}
	}
	if len(names) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(names, ", "))
	}
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		// Chrome asks before a public page reaches a loopback or private
		// address (Private Network Access); an allowed origin may.
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
	h.Set("Access-Control-Max-Age", "600")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// corsWriter is the response writer of a proxied request. Whatever the
// upstream (or a header_down) says about CORS is removed, informational
// responses included; an allowed origin gets the proxy's own
// Access-Control-Allow-Origin, and nothing more.
type corsWriter struct {
	w      http.ResponseWriter
	origin string // "" for a server-side client
	vary   bool   // answers depend on Origin (allow_browsers is set)
	wrote  bool
}

// writer wraps w for a request from origin ("" for a server-side client).
// It is returned by value, to live in the request's exchange.
func (g *browserGate) writer(w http.ResponseWriter, origin string) corsWriter {
	return corsWriter{w: w, origin: origin, vary: len(g.origins) > 0}
}

func (c *corsWriter) Header() http.Header { return c.w.Header() }

func (c *corsWriter) WriteHeader(code int) {
	if c.wrote {
		return
	}
	h := c.w.Header()
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			delete(h, k)
		}
	}
	if c.origin != "" {
		h.Set("Access-Control-Allow-Origin", c.origin)
	}
	if c.vary && !httpguts.HeaderValuesContainsToken(h["Vary"], "Origin") {
		// Answers differ by origin: caches must keep them apart.
		h.Add("Vary", "Origin")
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		c.w.WriteHeader(code) // informational: the final status follows
		return
	}
	c.wrote = true
	c.w.WriteHeader(code)
}

func (c *corsWriter) Write(b []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.w.Write(b)
}

// Flush passes flushes through, so streamed responses stay streamed.
func (c *corsWriter) Flush() {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(c.w).Flush()
}

// Unwrap gives http.ResponseController (hijacking for upgrades, deadlines)
// the underlying writer.
func (c *corsWriter) Unwrap() http.ResponseWriter { return c.w }

// Interface guards.
var (
	_ http.ResponseWriter = (*corsWriter)(nil)
	_ http.Flusher        = (*corsWriter)(nil)
)
