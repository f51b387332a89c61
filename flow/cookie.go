package flow

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// CookiePrefix starts every flow cookie's name, after "__Host-" when the
// cookie is Secure.
const CookiePrefix = "oauthconn_flow_"

// hostPrefix makes browsers accept a cookie only if it is Secure, has Path=/
// and no Domain: no other host (a sibling subdomain) and no plain-http page
// can set or overwrite it.
const hostPrefix = "__Host-"

// Cookie describes the flow cookie of a connector. A browser holds at most
// one per connector: starting a new authorization replaces the previous
// one's cookie (and ends that flow), so a browser does not pile up a cookie
// for every attempt.
type Cookie struct {
	// Secure gives the cookie the Secure attribute and the __Host- prefix
	// (with Path=/); for an https public URL.
	Secure bool
	// Path scopes a cookie that is not Secure: the routes that start and
	// finish authorizations (the base path).
	Path string
	// TTL is how long the cookie lives: a flow's TTL.
	TTL time.Duration
}

// Name returns the flow cookie's name for connector: the name itself when it
// is made of letters, digits, '.', '_' and '-', else "~" and a digest (a
// connector name may hold characters a cookie name cannot).
func (c Cookie) Name(connector string) string {
	n := CookiePrefix + cookieSafe(connector)
	if c.Secure {
		return hostPrefix + n
	}
	return n
}

func cookieSafe(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			sum := sha256.Sum256([]byte(s))
			return "~" + hex.EncodeToString(sum[:8])
		}
	}
	return s
}

// New returns the cookie that binds flow s of connector to the browser. Its
// value names the flow (its ID, not its state) and holds the binding.
func (c Cookie) New(connector string, s Started) *http.Cookie {
	return c.cookie(c.Name(connector), s.ID+"."+s.Binding, int(c.TTL.Seconds()))
}

// Clear returns a cookie that deletes the flow cookie called name.
func (c Cookie) Clear(name string) *http.Cookie { return c.cookie(name, "", -1) }

func (c Cookie) cookie(name, value string, maxAge int) *http.Cookie {
	path := c.Path
	if c.Secure {
		path = "/"
	}
	return &http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: c.Secure, SameSite: http.SameSiteLaxMode,
	}
}

// Previous returns the flow a browser's cookie of connector names, from
// r's cookies, if it has one.
func (c Cookie) Previous(r *http.Request, connector string) (id, binding string, ok bool) {
	ck, err := r.Cookie(c.Name(connector))
	if err != nil {
		return "", "", false
	}
	return parseValue(ck.Value)
}

// Find returns the name and binding of the flow cookie, among r's cookies,
// that belongs to the flow whose state is state; empty if there is none.
func Find(r *http.Request, state string) (name, binding string) {
	id := ID(state)
	for _, ck := range r.Cookies() {
		if !IsCookie(ck.Name) {
			continue
		}
		if cid, b, ok := parseValue(ck.Value); ok && cid == id {
			return ck.Name, b
		}
	}
	return "", ""
}

// IsCookie reports whether a cookie called name is a flow cookie.
func IsCookie(name string) bool {
	return strings.HasPrefix(strings.TrimPrefix(name, hostPrefix), CookiePrefix)
}

// parseValue splits a flow cookie's value into the flow's ID and binding.
func parseValue(v string) (id, binding string, ok bool) {
	id, binding, ok = strings.Cut(v, ".")
	if !ok || len(id) != 2*sha256.Size || binding == "" {
		return "", "", false
	}
	return id, binding, true
}
