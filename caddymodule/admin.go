package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the oauthconn operations on Caddy's admin endpoint, for
// operators and the `caddy-oauthconn oauthconn` commands:
//
//	GET    /oauthconn/connectors[?subject=]                status, never secrets
//	POST   /oauthconn/connectors/{name}/refresh[?subject=] refresh now
//	DELETE /oauthconn/connectors/{name}[?subject=]         disconnect
//	POST   /oauthconn/connectors/{name}/import             {"refresh_token":…,"subject":…}
//	GET    /oauthconn/doctor[?connector=]                  check the configuration against the world
//
// Per-user connectors report how many connections they hold, or one
// subject's with ?subject=.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.oauthconn",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (a AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/oauthconn/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	v, err := caddy.ActiveContext().AppIfConfigured("oauthconn")
	if err != nil || v == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("the oauthconn app is not configured")}
	}
	app := v.(*App)
	var apiErr error
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauthconn/connectors", func(w http.ResponseWriter, r *http.Request) {
		apiErr = app.adminStatus(w, r)
	})
	mux.HandleFunc("POST /oauthconn/connectors/{name}/refresh", func(w http.ResponseWriter, r *http.Request) {
		apiErr = app.adminRefresh(w, r)
	})
	mux.HandleFunc("DELETE /oauthconn/connectors/{name}", func(w http.ResponseWriter, r *http.Request) {
		apiErr = app.adminDisconnect(w, r)
	})
	mux.HandleFunc("POST /oauthconn/connectors/{name}/import", func(w http.ResponseWriter, r *http.Request) {
		apiErr = app.adminImport(w, r)
	})
	mux.HandleFunc("GET /oauthconn/doctor", func(w http.ResponseWriter, r *http.Request) { apiErr = app.adminDoctor(w, r) })
	mux.HandleFunc("/oauthconn/", func(http.ResponseWriter, *http.Request) {
		apiErr = caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such oauthconn admin route")}
	})
	mux.ServeHTTP(w, r)
	return apiErr
}

func (a *App) adminConnector(r *http.Request) (*Connector, string, error) {
	c := a.Connectors[r.PathValue("name")]
	if c == nil {
		return nil, "", caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown connector %q", r.PathValue("name"))}
	}
	if !c.authorizes() {
		return nil, "", caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("connector %s has grant %s: it has no connections to refresh, import or disconnect", c.name, c.grant)}
	}
	subject := r.URL.Query().Get("subject")
	if err := adminSubject(c, subject); err != nil {
		return nil, "", err
	}
	return c, subject, nil
}

func adminSubject(c *Connector, subject string) error {
	switch {
	case c.Subject == "" && subject != "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("connector %s is shared: it takes no subject", c.name)}
	case c.Subject != "" && subject == "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("connector %s is per user: give ?subject=", c.name)}
	case subject != "" && tokens.ValidSubject(subject) != nil:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("invalid subject %q", subject)}
	}
	return nil
}

func (a *App) adminStatus(w http.ResponseWriter, r *http.Request) error {
	subject := r.URL.Query().Get("subject")
	out := []connectorStatus{}
	for _, name := range a.connectorNames() {
		c := a.Connectors[name]
		if c.Subject != "" && subject == "" {
			// Per user: how many connections, not whose.
			st := connectorStatus{Name: name, Provider: c.Provider, PerUser: true, Status: "per_user"}
			if c.unconfigured() {
				st.Status = "unconfigured"
			} else if names, err := a.store.List(r.Context(), "tokens/"+name); err != nil {
				st.Status = "unavailable"
			} else {
				n := len(names)
				st.Connections = &n
			}
			out = append(out, st)
			continue
		}
		if c.Subject == "" && subject != "" {
			continue
		}
		if err := adminSubject(c, subject); err != nil {
			return err
		}
		out = append(out, a.status(r.Context(), c, subject, nil))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *App) adminRefresh(w http.ResponseWriter, r *http.Request) error {
	c, subject, err := a.adminConnector(r)
	if err != nil {
		return err
	}
	conn, err := a.adminClient(r.Context(), c)
	if err != nil {
		return err
	}
	tok, refreshed, err := a.keeper.ForceRefresh(r.Context(), tokens.Key{Connector: c.name, Subject: subject}, conn)
	if err != nil {
		return adminTokenError(c.name, err)
	}
	out := map[string]any{"refreshed": refreshed, "expires_at": expiresAt(tok)}
	if !refreshed {
		out["reason"] = "no new token was obtained: another replica refreshed the connection meanwhile, or it has no refresh token"
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *App) adminDisconnect(w http.ResponseWriter, r *http.Request) error {
	c, subject, err := a.adminConnector(r)
	if err != nil {
		return err
	}
	rev, err := a.disconnect(r.Context(), c, subject, "admin")
	if errors.Is(err, tokens.ErrAuthorizationRequired) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("connector %s has no connection", c.name)}
	}
	if errors.Is(err, tokens.ErrReplaced) {
		return writeJSON(w, http.StatusConflict, notDisconnected(c.name, rev))
	}
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	return writeJSON(w, http.StatusOK, disconnected(rev))
}

func (a *App) adminImport(w http.ResponseWriter, r *http.Request) error {
	c := a.Connectors[r.PathValue("name")]
	if c == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown connector %q", r.PathValue("name"))}
	}
	conn, err := a.adminClient(r.Context(), c)
	if err != nil {
		return err
	}
	var body struct {
		RefreshToken string `json:"refresh_token"`
		Subject      string `json:"subject"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil || body.RefreshToken == "" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New(`the body must be {"refresh_token": "...", "subject": "..."}`)}
	}
	if err := adminSubject(c, body.Subject); err != nil {
		return err
	}
	tok, err := a.keeper.Import(r.Context(), tokens.Key{Connector: c.name, Subject: body.Subject}, body.RefreshToken, "admin import", conn)
	if err != nil {
		return adminTokenError(c.name, err)
	}
	a.telemetry.emit(eventConnected, tokens.Key{Connector: c.name, Subject: body.Subject}, map[string]any{"connected_by": "admin import"})
	return writeJSON(w, http.StatusOK, map[string]any{"imported": true, "expires_at": expiresAt(tok)})
}

func adminTokenError(name string, err error) error {
	var ue *tokens.UnavailableError
	switch {
	case errors.Is(err, tokens.ErrAuthorizationRequired), connector.ClassOf(err) == connector.GrantRejected:
		// A refresh token refused on import is as much the provider's
		// answer as one refused on refresh: not a server error.
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("connector %s: the provider refused the refresh token; the connection needs authorization", name)}
	case errors.As(err, &ue):
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("connector %s: %w", name, err)}
	default:
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("connector %s: %w", name, err)}
	}
}

func expiresAt(tok tokens.Token) *time.Time {
	if tok.Expiry.IsZero() {
		return nil
	}
	return &tok.Expiry
}

// Interface guard.
var _ caddy.AdminRouter = AdminAPI{}
