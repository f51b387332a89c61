package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

func init() {
	caddy.RegisterModule(ProxyHandler{})
}

// ProxyHandler sends the request to the connector's upstream API with the
// connection's access token as "Authorization: Bearer …", using Caddy's own
// reverse proxy. Credentials the app sent (Authorization,
// Proxy-Authorization, cookies but those in PassCookies) are removed first. When the upstream
// answers 401, the token is refreshed (at most once per cooldown) and a
// replayable request is sent once more. Requests from web browsers are
// refused unless their origin is in AllowBrowsers.
type ProxyHandler struct {
	// Connector names the connector in the oauthconn app whose token is
	// attached.
	Connector string `json:"connector"`

	// Upstream is the base URL of the API, such as
	// https://graph.microsoft.com. Its path, if any, is put in front of
	// the request's path; Host is always the upstream's. Placeholders such
	// as {env.X} are expanded at load. {oauthconn.metadata.<name>} is the
	// connection's metadata, resolved on each request: such an upstream
	// must be https (http only on a loopback host) on a host of the
	// connector's allowed_hosts, or the request gets 502
	// upstream_not_allowed and nothing is sent. The same placeholders may
	// be used in header_up values. A connector with a resource may leave
	// it empty: the resource URL is then the upstream, and a request for
	// "/" (after handle_path) goes to the resource URL itself.
	Upstream string `json:"upstream,omitempty"`

	// ReplayLimit is the largest request body, in bytes, of which a copy
	// is kept so that the request can be sent again after a 401. Larger
	// and streamed (unknown-length) bodies are never replayed: the app
	// gets the upstream's 401 (the token is refreshed all the same) and
	// sends the request again. The copy costs a memory copy of the body
	// per request (BENCHMARKS.md measures a POST with and without it); -1
	// turns it off, so that only requests without a body are replayed.
	// Default (0): 1 MiB.
	ReplayLimit int64 `json:"replay_limit,omitempty"`

	// AllowBrowsers are the origins (such as https://app.example.com)
	// whose pages may call the proxy from a web browser. Requests from
	// any other page, recognised by their Origin or Sec-Fetch-Site, -Dest
	// or -User header, get 403 browser_request_refused and never reach
	// the upstream. The
	// proxy answers these origins' CORS preflights itself and gives them
	// Access-Control-Allow-Origin; the upstream's own CORS headers are
	// always removed. Default: none, as any page the operator visits
	// could otherwise act with the connection.
	AllowBrowsers []string `json:"allow_browsers,omitempty"`

	// PassCookies names the cookies the upstream may receive from the app.
	// Every other cookie is removed from proxied requests, flow cookies
	// always: the upstream is meant to see the connection's token, not
	// whatever session the app's client holds. Default: none.
	PassCookies []string `json:"pass_cookies,omitempty"`

	// Scopes, if set, are the scopes of the access token attached instead
	// of the connection's own: one obtained with the connection's refresh
	// token, for another resource of the same provider (Microsoft Entra:
	// https://contoso.sharepoint.com/.default for SharePoint REST from a
	// Graph connection). Such tokens are kept in memory per connection
	// and scope set, refreshed ahead of expiry; a refresh token rotated by
	// their refresh becomes the connection's.
	Scopes []string `json:"scopes,omitempty"`

	// ReverseProxy configures Caddy's reverse proxy (transport, timeouts,
	// header manipulation, response handling). Its upstreams are set from
	// Upstream and must not be given here. Its handle_response routes see
	// the request as it went upstream, the connection's token included:
	// they must not forward it or log its Authorization header.
	ReverseProxy *reverseproxy.Handler `json:"reverse_proxy,omitempty"`

	app      *App
	conn     *Connector
	static   target            // the path prefix of a static upstream
	meta     *metadataUpstream // set when the upstream depends on metadata
	plain    *reverseproxy.Handler
	browsers *browserGate
	scopes   []string
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ProxyHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauthconn_proxy",
		New: func() caddy.Module { return new(ProxyHandler) },
	}
}

const (
	defaultReplayLimit       = 1 << 20
	replayOff          int64 = -1 // no body is kept for a replay
)

// Provision resolves the connector and sets up the reverse proxy to the
// upstream. It does not contact the network.
func (h *ProxyHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.app = app
	h.conn = app.Connectors[h.Connector]
	if h.conn == nil {
		return fmt.Errorf("oauthconn_proxy: unknown connector %q (define it in the oauthconn global options)", h.Connector)
	}
	if h.ReplayLimit == 0 {
		h.ReplayLimit = defaultReplayLimit
	}
	if h.ReplayLimit < replayOff {
		return fmt.Errorf("oauthconn_proxy %s: replay_limit must be a size, or -1 (off)", h.Connector)
	}
	if h.browsers, err = newBrowserGate(h.AllowBrowsers); err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	if err := h.provisionScopes(); err != nil {
		return err
	}
	if h.ReverseProxy == nil {
		h.ReverseProxy = new(reverseproxy.Handler)
	}
	rp := h.ReverseProxy
	if len(rp.Upstreams) > 0 || rp.DynamicUpstreamsRaw != nil {
		return fmt.Errorf("oauthconn_proxy %s: upstreams are set by the upstream URL argument, not in the reverse proxy block", h.Connector)
	}

	raw := caddy.NewReplacer().ReplaceKnown(h.Upstream, "")
	if raw == "" && h.conn.Resource != "" {
		// The resource is the upstream; "/" (or nothing) after
		// handle_path means the resource itself.
		raw, h.static.exact = caddy.NewReplacer().ReplaceKnown(h.conn.Resource, ""), true
	}
	if raw == "" && h.conn.unconfigured() {
		// Neither connector nor upstream configured yet (the example
		// before any app is registered): the handler answers 503.
		return nil
	}
	if rp.Headers != nil {
		b, _ := json.Marshal(rp.Headers)
		if err := checkMetadataNames(h.conn, "header_up", string(b)); err != nil {
			return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
		}
	}
	if metadataPlaceholder.MatchString(raw) {
		return h.provisionMetadataUpstream(ctx, raw)
	}
	u, err := parseUpstream(raw)
	if err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	h.static.prefix = strings.TrimRight(u.Path, "/")
	h.static.rawPrefix = strings.TrimRight(u.EscapedPath(), "/")
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	rp.Upstreams = reverseproxy.UpstreamPool{{Dial: net.JoinHostPort(u.Hostname(), port)}}
	if u.Scheme == "https" {
		if rp.TransportRaw, err = withTLS(rp.TransportRaw); err != nil {
			return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
		}
	}
	setHost(rp, u.Host)
	return rp.Provision(ctx)
}

// setHost makes rp send Host host (a placeholder for an upstream from
// metadata): the upstream's, whatever the app sent.
func setHost(rp *reverseproxy.Handler, host string) {
	if rp.Headers == nil {
		rp.Headers = new(headers.Handler)
	}
	if rp.Headers.Request == nil {
		rp.Headers.Request = new(headers.HeaderOps)
	}
	if rp.Headers.Request.Set == nil {
		rp.Headers.Request.Set = http.Header{}
	}
	rp.Headers.Request.Set.Set("Host", host)
}

func parseUpstream(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("upstream URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream %q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q must be an http:// or https:// URL", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q must be scheme://host[:port][/path], without user, query or fragment", raw)
	}
	return u, nil
}

// withTLS makes sure an HTTP transport has TLS turned on, as the upstream
// is https.
func withTLS(transport json.RawMessage) (json.RawMessage, error) {
	m := map[string]any{"protocol": "http"}
	if transport != nil {
		if err := json.Unmarshal(transport, &m); err != nil {
			return nil, fmt.Errorf("reading transport: %w", err)
		}
	}
	if m["protocol"] != "http" {
		return nil, fmt.Errorf("an https upstream needs the http transport, not %v", m["protocol"])
	}
	if _, ok := m["tls"]; !ok {
		m["tls"] = map[string]any{}
	}
	return json.Marshal(m)
}

// Cleanup releases the reverse proxy's resources.
func (h *ProxyHandler) Cleanup() error {
	var errs []error
	if h.plain != nil && len(h.plain.Upstreams) > 0 {
		errs = append(errs, h.plain.Cleanup())
	}
	if h.ReverseProxy != nil && len(h.ReverseProxy.Upstreams) > 0 {
		errs = append(errs, h.ReverseProxy.Cleanup())
	}
	return errors.Join(errs...)
}

// exchange is what one proxied request needs besides the request: its
// response writers, its token and what a retry after a 401 is decided on.
// One is taken from a pool per request, writers included (exchanges.go).
type exchange struct {
	h          *ProxyHandler
	r          *http.Request
	key        tokens.Key
	conn       *connector.Connector
	access     tokens.Access // the access token attached, and the connection's metadata
	replayable bool
	retryErr   error // why the swallowed 401 is answered otherwise
	cors       corsWriter
	first      firstAttempt
	app        appRequest // the app's request, while an attempt changes it
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *ProxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Browsers first: a refused page must not even cause a token
	// refresh.
	origin, ok := h.browsers.check(w, r, h.conn.name)
	if !ok {
		return nil
	}
	x := newExchange(h, r)
	x.cors = h.browsers.writer(w, origin)
	err := x.serve(&x.cors, next)
	x.recycle() // not if serve panicked: the exchange is then left to the GC
	return err
}

// serve gets the connection's token and proxies the request with it.
func (x *exchange) serve(w http.ResponseWriter, next caddyhttp.Handler) error {
	h, c, r := x.h, x.h.conn, x.r
	if c.unconfigured() || len(h.ReverseProxy.Upstreams) == 0 {
		return writeUnavailable(w, time.Minute, apiError{Error: "connector_unconfigured", Connector: c.name,
			Message: "the connector has no client_id or upstream; configure it"})
	}
	if !c.authorizes() {
		return h.serveGrant(w, r, next) // grant.go
	}
	subject, err := c.subject(r)
	if err != nil {
		return writeSubjectError(w, c.name, err)
	}
	x.key = tokens.Key{Connector: c.name, Subject: subject}
	if x.conn, err = c.client(r.Context()); err != nil {
		return h.discoveryError(w, err)
	}
	if x.access, err = h.token(r.Context(), x.key, x.conn); err != nil {
		return h.tokenError(w, r, err)
	}
	rp, to, err := h.route(r, x.access.Metadata)
	if err != nil {
		return h.upstreamError(w, err)
	}
	return x.send(w, rp, to, next)
}

// send proxies the request with the token, and once more with a fresher
// one when the upstream refused it and the request can be sent again. (Its
// own function, with few returns, so that its defers cost no more than
// calls.)
func (x *exchange) send(w http.ResponseWriter, rp *reverseproxy.Handler, to *target, next caddyhttp.Handler) error {
	h, r := x.h, x.r
	// A body of known length within the replay limit can be sent again
	// after a 401; it streams, with a copy kept for the retry.
	var body *replayBody
	x.replayable = r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	if !x.replayable && r.ContentLength > 0 && r.ContentLength <= h.ReplayLimit {
		body = newReplayBody(r.Body, r.ContentLength)
		defer body.release()
		x.replayable = true
	}

	first := &x.first
	first.x = x
	first.begin(w)
	defer x.app.restore() // also if the reverse proxy panics
	err := rp.ServeHTTP(first, h.upstreamRequest(r, &x.access, to, body, &x.app), next)
	x.app.restore()
	if !first.swallowed {
		return err
	}
	// The swallowed answer's trailers may have come after its status.
	first.undo()
	if x.retryErr != nil {
		return h.tokenError(w, r, x.retryErr)
	}
	h.logger.Debug("retrying after upstream 401 with a refreshed token", zap.String("connector", h.conn.name))
	// The refreshed token set may carry other metadata.
	if rp, to, err = h.route(r, x.access.Metadata); err != nil {
		return h.upstreamError(w, err)
	}
	return rp.ServeHTTP(w, h.upstreamRequest(r, &x.access, to, body, &x.app), next)
}

// retry is called when the upstream refused the token (401, or 403 with a
// Bearer challenge), before the answer's body is read. It decides: retry
// with a fresher token (true, with x.access set), answer that the connection
// needs authorization or more of it (true, with x.retryErr set), or pass
// the answer through (false). A claims challenge, or one for more scope
// (step-up), needs the person: no refresh satisfies it.
func (x *exchange) retry(status int) bool {
	h, c := x.h, x.h.conn
	ch := discovery.ParseChallenge(x.first.Header())
	if c.res != nil && status == http.StatusUnauthorized {
		// A resource that names other metadata than it did is
		// discovered again on the next use.
		c.res.noticeChallenge(ch.ResourceMetadata)
	}
	if ch.Error == "insufficient_scope" && validScope(ch.Scope) {
		// RFC 6750 3.1 says 403; MCP servers and others also send it
		// with 401.
		x.retryErr = h.challenged(x.r.Context(), x.key, ask{scope: ch.Scope})
		h.app.telemetry.retries.WithLabelValues(c.name, "scope_challenge").Inc()
		return true
	}
	if status != http.StatusUnauthorized {
		return false
	}
	outcome := "passed_through"
	defer func() { h.app.telemetry.retries.WithLabelValues(c.name, outcome).Inc() }()
	if claims, ok := claimsChallenge(ch); ok {
		x.retryErr, outcome = h.challenged(x.r.Context(), x.key, ask{claims: claims}), "claims_challenge"
		return true
	}
	fresh, err := h.rejected(x.r.Context(), x.key, x.conn, x.access.Token)
	switch {
	case errors.Is(err, tokens.ErrAuthorizationRequired):
		x.retryErr, outcome = err, "authorization_required"
		return true
	case err != nil:
		if !errors.Is(err, tokens.ErrNoRetry) {
			h.logger.Debug("no retry after upstream 401", zap.String("connector", c.name), zap.Error(err))
		}
		return false
	case !x.replayable:
		return false
	}
	x.access, outcome = tokens.AccessOf(fresh), "retried"
	return true
}

// upstreamRequest makes r the request as it goes upstream: the app's
// credentials and flow cookies removed, the connection's token attached,
// the upstream's path prefix added, and the replayable body (if any) ready
// for this attempt. It changes r in place (Caddy's reverse proxy copies the
// request it sends, URL and header included; a copy here would be a second
// one per request) and keeps what it changed in saved, whose restore puts
// the app's request back once the attempt is over.
func (h *ProxyHandler) upstreamRequest(r *http.Request, a *tokens.Access, to *target, body *replayBody, saved *appRequest) *http.Request {
	saved.take(r)
	hdr := r.Header
	if saved.conn != nil {
		dropConnectionHeaders(hdr, &saved.named)
	}
	if saved.proxyAuth != nil {
		delete(hdr, "Proxy-Authorization")
	}
	if len(saved.cookie) > 0 {
		h.stripCookies(r)
	}
	// Replaces the app's Authorization, if any.
	saved.bearer[0] = a.Authorization
	hdr["Authorization"] = saved.bearer[:]
	if to.prefix != "" {
		saved.pathChanged = true
		u := r.URL
		switch {
		case to.exact && (u.Path == "/" || u.Path == ""):
			u.Path, u.RawPath = to.prefix, ""
			if to.rawPrefix != to.prefix {
				u.RawPath = to.rawPrefix
			}
		default:
			escaped := u.EscapedPath()
			u.Path = to.prefix + u.Path
			if u.RawPath != "" || to.rawPrefix != to.prefix {
				u.RawPath = to.rawPrefix + escaped
			}
		}
	}
	if body != nil {
		r.Body, r.GetBody = body.attempt(), nil
		saved.bodyChanged = true
	}
	return r
}

// appRequest is what upstreamRequest changed of the app's request, as it
// was before: the URL's path, the body, and the values of the headers it
// replaces or removes (nil for those the app did not send). Header values
// are only ever replaced, never changed in place, so keeping the slices
// keeps the values without a copy.
type appRequest struct {
	r               *http.Request
	path, rawPath   string
	body            io.ReadCloser
	getBody         func() (io.ReadCloser, error)
	auth, proxyAuth []string
	cookie, conn    []string
	named           http.Header // the headers Connection named (rare)
	// bearer holds the Authorization value sent upstream, sparing a
	// slice per request (Caddy's reverse proxy sends a copy).
	bearer [1]string
	// What else changed: restore touches only that.
	pathChanged, bodyChanged bool
}

// take remembers r's parts that upstreamRequest changes.
func (a *appRequest) take(r *http.Request) {
	h := r.Header
	*a = appRequest{
		r: r, path: r.URL.Path, rawPath: r.URL.RawPath, body: r.Body, getBody: r.GetBody,
		auth: h["Authorization"], proxyAuth: h["Proxy-Authorization"], cookie: h["Cookie"], conn: h["Connection"],
	}
}

// restore puts the app's request back, once.
func (a *appRequest) restore() {
	if a.r == nil {
		return
	}
	r := a.r
	if a.pathChanged {
		r.URL.Path, r.URL.RawPath = a.path, a.rawPath
	}
	if a.bodyChanged {
		r.Body, r.GetBody = a.body, a.getBody
	}
	h := r.Header
	putBack(h, "Authorization", a.auth)
	// The others changed only if the app sent them.
	if a.proxyAuth != nil {
		h["Proxy-Authorization"] = a.proxyAuth
	}
	if a.cookie != nil {
		h["Cookie"] = a.cookie
	}
	if a.conn != nil {
		h["Connection"] = a.conn
		for k, v := range a.named {
			h[k] = v
		}
	}
	a.r = nil
}

// putBack sets h's values of key to v, or removes key if v is nil.
func putBack(h http.Header, key string, v []string) {
	if v == nil {
		delete(h, key)
		return
	}
	h[key] = v
}

// dropConnectionHeaders removes the hop-by-hop headers the app names in
// Connection, and those names from Connection, keeping only "Upgrade" (for
// WebSockets); the values removed are added to *removed. The reverse proxy
// would otherwise remove the named headers after this handler set them:
// "Connection: Authorization" would strip the Bearer on its way upstream.
func dropConnectionHeaders(h http.Header, removed *http.Header) {
	values := h["Connection"]
	if len(values) == 0 {
		return
	}
	upgrade := false
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			name = textproto.TrimString(name)
			if strings.EqualFold(name, "Upgrade") {
				upgrade = true
				continue
			}
			if name == "" {
				continue
			}
			key := textproto.CanonicalMIMEHeaderKey(name)
			if v, ok := h[key]; ok {
				if *removed == nil {
					*removed = http.Header{}
				}
				(*removed)[key] = v
				delete(h, key)
			}
		}
	}
	delete(h, "Connection")
	if upgrade {
		h["Connection"] = []string{"Upgrade"}
	}
}

// stripCookies keeps only the cookies named in PassCookies, and never a
// flow cookie.
func (h *ProxyHandler) stripCookies(r *http.Request) {
	if len(h.PassCookies) == 0 {
		// The default: nothing to parse, nothing kept.
		r.Header.Del("Cookie")
		return
	}
	all := r.Cookies()
	r.Header.Del("Cookie")
	var keep []string
	for _, ck := range all {
		if slices.Contains(h.PassCookies, ck.Name) && !flow.IsCookie(ck.Name) {
			keep = append(keep, ck.Name+"="+ck.Value)
		}
	}
	if len(keep) > 0 {
		r.Header.Set("Cookie", strings.Join(keep, "; "))
	}
}

func (h *ProxyHandler) tokenError(w http.ResponseWriter, r *http.Request, err error) error {
	name := h.conn.name
	var ue *tokens.UnavailableError
	var ce *challengeError
	switch {
	case errors.As(err, &ce):
		return h.writeChallenge(w, ce)
	case errors.Is(err, tokens.ErrAuthorizationRequired):
		return writeJSON(w, http.StatusUnauthorized, apiError{
			Error: "authorization_required", Connector: name, AuthorizeURL: h.app.authorizeURL(name),
			Message: "the connection needs to be authorized; open authorize_url in a browser",
		})
	case errors.Is(err, tokens.ErrMisconfigured) && errors.As(err, &ue):
		h.logger.Warn("no usable token: the provider refuses the connector's client", zap.String("connector", name), zap.Error(err))
		return writeUnavailable(w, ue.RetryAfter, apiError{Error: "connector_misconfigured", Connector: name,
			Message: "the provider refuses this connector's client credentials (for example an expired client secret); connections are kept and work again once the configuration is fixed"})
	case errors.Is(err, tokens.ErrOverloaded) && errors.As(err, &ue):
		return writeOverloaded(w, ue.RetryAfter, name)
	case errors.As(err, &ue):
		h.logger.Warn("no usable token", zap.String("connector", name), zap.Error(err))
		return writeUnavailable(w, ue.RetryAfter, apiError{Error: "token_unavailable", Connector: name,
			Message: "no usable access token right now; retry later"})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		if r.Context().Err() != nil {
			return caddyhttp.Error(499, err)
		}
		return writeUnavailable(w, 5*time.Second, apiError{Error: "token_unavailable", Connector: name})
	default:
		h.logger.Error("getting token", zap.String("connector", name), zap.Error(err))
		return writeUnavailable(w, 5*time.Second, apiError{Error: "token_unavailable", Connector: name})
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*ProxyHandler)(nil)
	_ caddy.CleanerUpper          = (*ProxyHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ProxyHandler)(nil)
)
