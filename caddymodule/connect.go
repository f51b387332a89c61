package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

func init() {
	caddy.RegisterModule(ConnectHandler{})
}

// ConnectHandler serves the authorization code grant below the app's base
// path (default /oauth):
//
//	POST {base}/connectors/{name}/authorize   JSON {"authorization_url": …}
//	GET  {base}/connectors/{name}/authorize   302 to the provider
//	GET  {base}/callback                      the provider's redirect back
//	DELETE {base}/connectors/{name}           disconnect: revoke, then delete
//	GET  {base}/connectors                    connectors and their status, JSON
//	GET  {base}/readyz                        200 when the store is usable, else 503
//	GET  {base}/livez                         200 while the process serves
//	GET  {base}/                              the same as a page
//
// Requests outside the base path go to the next handler.
type ConnectHandler struct {
	app    *App
	mux    *http.ServeMux
	access *accessLog
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ConnectHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauthconn_connect",
		New: func() caddy.Module { return new(ConnectHandler) },
	}
}

// Provision finds the oauthconn app and builds the routes.
func (h *ConnectHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.app = app
	h.logger = ctx.Logger()
	h.access = newAccessLog(ctx)
	b := app.BasePath
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+b+"/connectors/{name}/authorize", h.authorize)
	mux.HandleFunc("GET "+b+"/connectors/{name}/authorize", h.authorize)
	mux.HandleFunc("GET "+b+"/callback", h.callback)
	mux.HandleFunc("GET "+b+"/connectors", h.list)
	mux.HandleFunc("DELETE "+b+"/connectors/{name}", h.disconnect)
	mux.HandleFunc("POST "+b+"/connectors/{name}/disconnect", h.disconnectForm)
	mux.HandleFunc("GET "+b+"/assets/{file}", serveAsset)
	mux.HandleFunc("GET "+b+"/clients/{name}", h.clientDocument)
	mux.HandleFunc("GET "+b+"/readyz", h.readyz)
	mux.HandleFunc("GET "+b+"/livez", h.livez)
	mux.HandleFunc("GET "+b+"/{$}", h.page)
	mux.HandleFunc(b+"/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: "no such oauthconn route"})
	})
	h.mux = mux
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *ConnectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if p := r.URL.Path; p != h.app.BasePath && !strings.HasPrefix(p, h.app.BasePath+"/") {
		return next.ServeHTTP(w, r)
	}
	if r.URL.Path == h.app.BasePath {
		http.Redirect(w, r, h.app.BasePath+"/", http.StatusFound)
		return nil
	}
	// The authorize and callback routes carry states, codes and PKCE
	// challenges in their URLs: they are rate limited, and logged
	// redacted.
	callback := r.URL.Path == h.app.BasePath+"/callback"
	if !callback && !strings.HasSuffix(r.URL.Path, "/authorize") {
		h.mux.ServeHTTP(w, r)
		return nil
	}
	h.access.serve(w, r, callback, func(w http.ResponseWriter, r *http.Request) {
		if !h.limited(w, r) {
			h.mux.ServeHTTP(w, r)
		}
	})
	return nil
}

// limited applies the per-client rate limit (to the authorize and callback
// routes), answering 429 with Retry-After when it is exceeded.
func (h *ConnectHandler) limited(w http.ResponseWriter, r *http.Request) bool {
	if h.app.limiter == nil {
		return false
	}
	p := r.URL.Path
	ok, wait := h.app.limiter.Allow(h.app.clientKey(r), time.Now())
	if ok {
		return false
	}
	h.logger.Warn("rate limit exceeded", zap.String("route", strings.TrimPrefix(p, h.app.BasePath)))
	tooMany(w, wait)
	if strings.HasSuffix(p, "/callback") {
		writeErrorPage(w, http.StatusTooManyRequests, h.app.BasePath+"/", "Too many attempts from your address. Wait a moment and start again.", "")
		return true
	}
	writeJSON(w, http.StatusTooManyRequests, apiError{Error: "rate_limited", Message: "too many requests; retry after the Retry-After delay"})
	return true
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	secs := int(wait.Seconds() + 0.999)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
}

// clientIP is the client's address as Caddy determined it (honouring
// trusted_proxies), without the port.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// userID is the authenticated user, as set by Caddy's authentication
// handlers (basic_auth) or copied from forward_auth, if any.
func userID(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	id, _ := repl.GetString("http.auth.user.id")
	return id
}

// lookup finds a configured connector by its path value, answering the
// request itself when there is none.
func (h *ConnectHandler) lookup(w http.ResponseWriter, name string) *Connector {
	c := h.app.Connectors[name]
	if c == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown_connector", Connector: name})
		return nil
	}
	if c.unconfigured() {
		writeUnavailable(w, time.Minute, apiError{Error: "connector_unconfigured", Connector: name,
			Message: "the connector has no client_id; register the app with the provider and configure it"})
		return nil
	}
	if !c.authorizes() {
		writeNoConnections(w, c)
		return nil
	}
	return c
}

func (h *ConnectHandler) authorize(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	c := h.lookup(w, r.PathValue("name"))
	if c == nil {
		return
	}
	returnTo := r.URL.Query().Get("return_to")
	popup := r.URL.Query().Get("popup") == "1"
	form := false // a form posted from the confirmation page: redirect, not JSON
	if r.Method == http.MethodPost {
		if !h.app.postIntended(r) {
			writeJSON(w, http.StatusForbidden, apiError{Error: "cross_site_request", Connector: c.name,
				Message: "authorize by POST from this origin, or with a JSON body"})
			return
		}
		var body struct {
			ReturnTo string `json:"return_to"`
			Popup    bool   `json:"popup"`
		}
		switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
		case "application/json":
			err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&body)
			if err != nil && !errors.Is(err, io.EOF) {
				writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_request", Message: "the body must be a JSON object such as {\"return_to\":\"/path\"}"})
				return
			}
			returnTo, popup = body.ReturnTo, body.Popup
		case "application/x-www-form-urlencoded":
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if err := r.ParseForm(); err != nil {
				writeErrorPage(w, http.StatusBadRequest, h.app.BasePath+"/", "The form could not be read. Start the connection again.", "")
				return
			}
			returnTo, popup, form = r.PostForm.Get("return_to"), r.PostForm.Get("popup") == "1", true
		}
	}
	returnTo = h.app.returnTo.Safe(returnTo, "")
	subject, err := c.subject(r)
	if err != nil {
		writeSubjectError(w, c.name, err)
		return
	}
	challenge := r.URL.Query().Get("challenge")
	if r.Method != http.MethodPost && !h.app.navigationIntended(r) {
		// Another site led here: the user confirms with a same-origin
		// form before anything starts.
		writePage(w, http.StatusOK, "confirm.html", map[string]any{
			"Connector": c.name, "Subject": subject, "ReturnTo": returnTo, "Popup": popup,
			"Action": h.app.BasePath + "/connectors/" + url.PathEscape(c.name) + "/authorize" + challengeQuery(challenge),
			"Back":   h.app.BasePath + "/",
		})
		return
	}

	// A resource connector finds its authorization server first; a refusal
	// starts no flow.
	conn, err := c.client(r.Context())
	if err != nil {
		h.discoveryFailed(w, r, c, err, form || r.Method != http.MethodPost)
		return
	}
	// Learn ahead of the callback whether the server sends iss (RFC 9207).
	go func(ctx context.Context) {
		if err := conn.Discover(ctx); err != nil {
			h.logger.Warn("authorization server metadata", zap.String("connector", c.name), zap.Error(err))
		}
	}(context.WithoutCancel(r.Context()))

	started, err := h.app.flows.Begin(r.Context(), flow.Params{
		Connector: c.name, Subject: subject, ReturnTo: returnTo, CreatedBy: h.app.userOf(r, c), Popup: popup,
	})
	if err != nil {
		h.logger.Error("starting authorization", zap.String("connector", c.name), zap.Error(err))
		writeUnavailable(w, 5*time.Second, apiError{Error: "store_unavailable", Connector: c.name, Message: "could not record the authorization; try again"})
		return
	}
	now := time.Now()
	h.dropFlows(r.Context(), c.name, h.app.pending.add(c.name, h.app.flowClient(r, c), started.ID, now, now.Add(h.app.flows.TTL())))
	// One flow cookie per connector: this one replaces the cookie of the
	// browser's previous authorization, whose flow can then never finish,
	// so it ends now.
	cookies := h.app.flowCookies()
	if id, binding, ok := cookies.Previous(r, c.name); ok {
		h.abandon(r.Context(), id, binding)
	}
	http.SetCookie(w, cookies.New(c.name, started))
	authURL := h.authCodeURL(r, c, conn, subject, challenge, started)
	h.logger.Info("authorization started", zap.String("connector", c.name))
	h.app.telemetry.authorization(c.name, "started")
	switch {
	case form:
		http.Redirect(w, r, authURL, http.StatusSeeOther)
	case r.Method == http.MethodPost:
		writeJSON(w, http.StatusOK, map[string]string{"authorization_url": authURL})
	default:
		http.Redirect(w, r, authURL, http.StatusFound)
	}
}

func (h *ConnectHandler) callback(w http.ResponseWriter, r *http.Request) {
	back := h.app.BasePath + "/"
	cb, perr := flow.ParseCallback(r.URL.RawQuery)
	state := cb.State
	// consumed is set once the state can no longer be used (redeemed,
	// unknown, expired, or refused for another browser or user, which
	// ends the flow), and the flow cookie is then cleared. A store error
	// leaves both, so that the callback can be tried again.
	consumed := false
	connectorName := "unknown" // until the state names it
	var cookie, binding string // the flow cookie of this state, if the browser has it
	fail := func(status int, reason, detail string, logReason string) {
		h.logger.Warn("authorization failed", zap.String("reason", logReason))
		h.app.telemetry.authorization(connectorName, logReason)
		if consumed && cookie != "" {
			http.SetCookie(w, h.app.flowCookies().Clear(cookie))
		}
		writeErrorPage(w, status, back, reason, detail)
	}
	if perr != nil {
		fail(http.StatusBadRequest, "The authorization response is malformed. Start the connection again.", "", "malformed_response")
		return
	}
	cookie, binding = flow.Find(r, state)
	id := flow.ID(state)
	// State and browser binding are checked, and the state consumed,
	// before anything else: no token request is made for a state that is
	// unknown, used, expired or started in another browser.
	fl, err := h.app.flows.Finish(r.Context(), state, binding, h.app.userOf(r, h.app.connectorOfCookie(cookie)))
	switch {
	case errors.Is(err, flow.ErrOtherUser), errors.Is(err, flow.ErrNotBound):
		// Refused: the flow ends here, so that its slot is free at once
		// and its state (which someone else holds) redeems nothing later.
		consumed = true
		h.dropFlows(r.Context(), "", []string{id})
		if errors.Is(err, flow.ErrOtherUser) {
			fail(http.StatusForbidden, "This authorization was started by another user. Start the connection again as yourself.", "", "other_user")
			return
		}
		fail(http.StatusForbidden, "This authorization was started in another browser, or its cookie expired. Start the connection again here.", "", "not_bound")
		return
	case errors.Is(err, flow.ErrExpired):
		consumed = true
		h.app.pending.done(id)
		fail(http.StatusBadRequest, "This authorization took too long and expired. Start the connection again.", "", "expired_state")
		return
	case errors.Is(err, flow.ErrUnknownState):
		consumed = true
		h.app.pending.done(id)
		fail(http.StatusBadRequest, "This authorization is unknown or was already used. Start the connection again.", "", "unknown_state")
		return
	case err != nil:
		h.logger.Error("finishing authorization", zap.Error(err))
		fail(http.StatusServiceUnavailable, "The authorization could not be checked right now. Try again.", "", "store_error")
		return
	}
	consumed = true
	connectorName = fl.Connector
	h.app.pending.done(id)
	log := h.logger.With(zap.String("connector", fl.Connector))
	c := h.app.Connectors[fl.Connector]
	if c == nil || c.unconfigured() {
		fail(http.StatusBadRequest, "The connector of this authorization is no longer configured.", "", "connector_gone")
		return
	}
	conn, err := c.client(r.Context())
	if err != nil {
		log.Warn("discovering the connector's authorization server", zap.Error(err))
		fail(http.StatusBadGateway, "The connector's authorization server could not be discovered.", discoveryDetail(err), "discovery_failed")
		return
	}
	// Mix-up defence (RFC 9207): the response must come from this
	// connector's authorization server.
	if err := conn.CheckIssuer(r.Context(), cb.Iss); err != nil {
		log.Warn("authorization response from another issuer", zap.Error(err))
		fail(http.StatusBadRequest, "The authorization response did not come from this connector's authorization server.", "", "issuer_mismatch")
		return
	}
	if cb.Error != "" {
		log.Warn("provider returned an error", zap.String("error", capText(cb.Error, 64)))
		fail(http.StatusBadRequest, "The provider did not authorize the connection.", cb.Error+describe(cb.ErrorDescription), "provider_error")
		return
	}
	tok, err := conn.Exchange(r.Context(), cb.Code, fl.Verifier)
	if err != nil {
		if c.res != nil && errors.Is(err, connector.ErrClientRejected) {
			c.res.clientRejected(context.WithoutCancel(r.Context()))
		}
		// The provider answering with an error and the provider not
		// answering call for different remedies: start again, or wait.
		// Only the status and the RFC 6749 code are logged, never the
		// body, which may echo the code.
		var pe *connector.ProviderError
		if connector.ClassOf(err) == connector.ClientRejected {
			// The provider refuses the client (its secret, key or
			// assertion), or the client could not make its assertion:
			// starting again cannot help until the configuration is
			// fixed. The error carries no secret.
			code := ""
			if errors.As(err, &pe) {
				code = pe.Code
			}
			log.Error("the provider refuses the connector's client authentication; fix the connector's configuration", zap.Error(err))
			fail(http.StatusServiceUnavailable, "The provider refused this connector's client credentials (its secret, key or assertion), so the connection could not be finished. An administrator must fix the connector's configuration; then start the connection again.", code, "client_rejected")
			return
		}
		if errors.As(err, &pe) {
			log.Warn("the provider refused the authorization code", zap.Int("status", pe.Status), zap.String("error", pe.Code))
			fail(http.StatusBadRequest, "The provider refused to exchange the authorization code. Start the connection again.", pe.Code, "exchange_refused")
			return
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
			log.Warn("could not reach the provider to exchange the authorization code", zap.Error(err))
			fail(http.StatusBadGateway, "Could not reach the provider to finish the connection. Wait a moment and start the connection again.", "", "provider_unreachable")
			return
		}
		// The provider answered 200, but not with a usable token
		// response (no access token, a body that is not one).
		log.Warn("the provider's token response could not be used", zap.Error(err))
		fail(http.StatusBadGateway, "The provider's answer could not be used: it did not return an access token.", "", "invalid_token_response")
		return
	}
	if tok.AccessToken == "" {
		fail(http.StatusBadRequest, "The provider returned no access token.", "", "no_access_token")
		return
	}
	md, err := connectMetadata(r.Context(), conn, r.URL.Query(), tok)
	if err != nil {
		// Without its metadata the connection could not reach its
		// upstream: it is not stored.
		log.Warn("the metadata discovery request failed; the connection is not stored", zap.Error(err))
		fail(http.StatusBadGateway, "The provider authorized the connection, but the request that finds its details failed. Wait a moment and start the connection again.", "", "discovery_failed")
		return
	}
	if _, err := h.app.keeper.SaveWithMetadata(r.Context(), tokens.Key{Connector: fl.Connector, Subject: fl.Subject}, tok, fl.CreatedBy, md); err != nil {
		log.Error("storing tokens", zap.Error(err))
		fail(http.StatusServiceUnavailable, "The connection was authorized but could not be stored. Try again.", "", "store_error")
		return
	}
	log.Info("connection authorized", zap.Bool("refresh_token", tok.RefreshToken != ""), zap.Time("expiry", tok.Expiry))
	h.app.telemetry.authorization(fl.Connector, "completed")
	h.app.telemetry.emit(eventConnected, tokens.Key{Connector: fl.Connector, Subject: fl.Subject}, map[string]any{"connected_by": fl.CreatedBy})
	http.SetCookie(w, h.app.flowCookies().Clear(cookie))
	noStore(w)
	if fl.Popup {
		// The connect page opened this window: tell it and close.
		writePage(w, http.StatusOK, "connected.html", map[string]string{
			"Connector": fl.Connector, "Back": back, "Base": h.app.BasePath,
		})
		return
	}
	dest := fl.ReturnTo
	if dest == "" {
		dest = back + "?connected=" + url.QueryEscape(fl.Connector)
	}
	http.Redirect(w, r, dest, http.StatusSeeOther)
}

// dropTimeout bounds the store requests that delete displaced flows.
const dropTimeout = 5 * time.Second

// dropFlows ends pending flows: they stop counting and their records are
// deleted, on a context the client cannot cancel. A record that stays
// behind (the store failing) expires and is swept; it cannot lock anyone
// out, as it no longer counts. connector, if known, is counted in the
// metrics as displaced.
func (h *ConnectHandler) dropFlows(ctx context.Context, connector string, ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	for _, id := range ids {
		h.app.pending.done(id)
		if err := h.app.flows.Drop(ctx, id); err != nil {
			h.logger.Warn("dropping a pending authorization", zap.Error(err))
		}
		if connector != "" {
			h.app.telemetry.authorization(connector, "displaced")
		}
	}
	if connector != "" {
		h.logger.Info("pending authorizations displaced by newer ones", zap.String("connector", connector), zap.Int("displaced", len(ids)))
	}
}

// abandon ends the browser's previous flow of a connector when it starts
// another, if the browser holds that flow's binding.
func (h *ConnectHandler) abandon(ctx context.Context, id, binding string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	dropped, err := h.app.flows.Abandon(ctx, id, binding)
	if err != nil {
		h.logger.Warn("ending a replaced authorization", zap.Error(err))
	}
	if dropped {
		h.app.pending.done(id)
	}
}

// disconnect revokes the connection's grant at the provider (RFC 7009) when
// the connector has a revocation URL, then deletes the stored tokens with
// every version and drops them from the cache. It answers 200 saying
// whether the provider confirmed the revocation, and why not; the local
// delete happens all the same.
func (h *ConnectHandler) disconnect(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	c := h.app.Connectors[r.PathValue("name")]
	if c == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "unknown_connector", Connector: r.PathValue("name")})
		return
	}
	if !c.authorizes() {
		writeNoConnections(w, c)
		return
	}
	subject, err := c.subject(r)
	if err != nil {
		writeSubjectError(w, c.name, err)
		return
	}
	rev, err := h.app.disconnect(r.Context(), c, subject, h.app.userOf(r, c))
	switch {
	case errors.Is(err, tokens.ErrAuthorizationRequired):
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_connected", Connector: c.name})
	case errors.Is(err, tokens.ErrReplaced):
		writeJSON(w, http.StatusConflict, notDisconnected(c.name, rev))
	case err != nil:
		writeUnavailable(w, 5*time.Second, apiError{Error: "store_unavailable", Connector: c.name, Message: "could not delete the connection; try again"})
	default:
		writeJSON(w, http.StatusOK, disconnected(rev))
	}
}

// disconnectForm is the connect page's Disconnect without JavaScript: the
// same as DELETE, then back to the page. Only a same-origin form may use
// it (Sec-Fetch-Site or Origin), so another site cannot post it.
func (h *ConnectHandler) disconnectForm(w http.ResponseWriter, r *http.Request) {
	sfs := r.Header.Get("Sec-Fetch-Site")
	origin := r.Header.Get("Origin")
	if !(sfs == "same-origin" || (sfs == "" && origin != "" && origin == h.app.origin())) {
		writeErrorPage(w, http.StatusForbidden, h.app.BasePath+"/", "This form can only be sent from the connections page.", "")
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	h.disconnect(rec, r)
	if rec.status >= 300 && rec.status != http.StatusNotFound {
		return
	}
	http.Redirect(w, r, h.app.BasePath+"/", http.StatusSeeOther)
}

// statusRecorder holds back a 2xx/404 answer of a handler (to redirect
// instead) and passes any other through.
type statusRecorder struct {
	http.ResponseWriter
	status int
	passed bool
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	if code >= 300 && code != http.StatusNotFound {
		s.passed = true
		s.ResponseWriter.WriteHeader(code)
	}
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	if s.passed {
		return s.ResponseWriter.Write(b)
	}
	return len(b), nil
}

func describe(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func (h *ConnectHandler) statuses(r *http.Request) []connectorStatus {
	var out []connectorStatus
	for _, name := range h.app.connectorNames() {
		c := h.app.Connectors[name]
		subject, serr := c.subject(r)
		out = append(out, h.app.status(r.Context(), c, subject, serr))
	}
	return out
}

func (h *ConnectHandler) list(w http.ResponseWriter, r *http.Request) {
	st := h.statuses(r)
	if st == nil {
		st = []connectorStatus{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *ConnectHandler) page(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Connectors []connectorStatus
		Connected  string
		Base       string
	}{Connectors: h.statuses(r), Base: h.app.BasePath}
	if name := r.URL.Query().Get("connected"); h.app.Connectors[name] != nil {
		data.Connected = name
	}
	writePage(w, http.StatusOK, "status.html", data)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*ConnectHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ConnectHandler)(nil)
)
