package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

// defaultUser is where the authenticated user comes from unless the app or
// the connector says otherwise: the user Caddy's authentication handlers
// (basic_auth, or an authentication module) set.
const defaultUser = "{http.auth.user.id}"

// userTemplate is the placeholder that names connector c's authenticated
// user: its own user option, else the app's, else defaultUser. c may be
// nil (a request not tied to a known connector).
func (a *App) userTemplate(c *Connector) string {
	switch {
	case c != nil && c.User != "":
		return c.User
	case a.User != "":
		return a.User
	}
	return defaultUser
}

// userOf is the authenticated user of request r for connector c (which
// may be nil), as the user placeholder evaluates, or "" if nobody is
// authenticated. The flow records it, and only the same user may finish
// the flow.
func (a *App) userOf(r *http.Request, c *Connector) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	return repl.ReplaceAll(a.userTemplate(c), "")
}

// connectorOfCookie is the connector whose flow cookie is called name,
// or nil: the callback learns the flow's connector from the store only
// after checking the user, so the cookie tells it whose user option
// applies.
func (a *App) connectorOfCookie(name string) *Connector {
	if name == "" {
		return nil
	}
	cookies := a.flowCookies()
	for cname, c := range a.Connectors {
		if cookies.Name(cname) == name {
			return c
		}
	}
	return nil
}
