package caddymodule

import (
	"mime"
	"net/http"
	"net/url"
)

// Starting an authorization acts with the user's session at the provider:
// a page on another site must not be able to start one behind their back
// (login CSRF at the provider's side, or a connection made to an account
// the user did not mean). These checks decide whether a request to the
// authorize route was meant by the user.

// requestOrigin is the origin a same-origin request carries: the public
// URL's, or without one the origin the request was addressed to.
func (a *App) requestOrigin(r *http.Request) string {
	if o := a.origin(); o != "" {
		return o
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// navigationIntended reports whether a GET of the authorize route may
// redirect to the provider at once: the user typed or bookmarked it
// (Sec-Fetch-Site: none), the connect page led there (same-origin), or a
// client that is no browser asked (no Sec-Fetch-Site, no Origin, no
// Referer). A link or a script on another site gets the confirmation page
// instead.
func (a *App) navigationIntended(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	own := a.requestOrigin(r)
	if o := r.Header.Get("Origin"); o != "" {
		return o == own
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		return err == nil && u.Scheme+"://"+u.Host == own
	}
	return true
}

// postIntended reports whether a POST of the authorize route comes from
// this origin: Sec-Fetch-Site same-origin, or a matching Origin. A JSON
// body is enough too: another site's page cannot send one without a CORS
// preflight, which nothing here grants.
func (a *App) postIntended(r *http.Request) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		return true
	}
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs != "" {
		return sfs == "same-origin"
	}
	o := r.Header.Get("Origin")
	return o != "" && o == a.requestOrigin(r)
}
