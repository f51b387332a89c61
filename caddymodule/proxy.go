package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// as {env.X} are expanded.
	Upstream string `json:"upstream"`

	// ReplayLimit is the largest request body, in bytes, that is buffered
	// so that the request can be sent again after a 401. Larger and
	// streamed (unknown-length) bodies are never replayed. Default: 1 MiB.
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

	// ReverseProxy configures Caddy's reverse proxy (transport, timeouts,
	// header manipulation, response handling). Its upstreams are set from
	// Upstream and must not be given here.
	ReverseProxy *reverseproxy.Handler `json:"reverse_proxy,omitempty"`

	app      *App
	conn     *Connector
	prefix   string
	browsers *browserGate
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ProxyHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauthconn_proxy",
		New: func() caddy.Module { return new(ProxyHandler) },
	}
}

const defaultReplayLimit = 1 << 20

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
	if h.ReplayLimit < 0 {
		return fmt.Errorf("oauthconn_proxy %s: replay_limit must not be negative", h.Connector)
	}
	if h.browsers, err = newBrowserGate(h.AllowBrowsers); err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	if h.ReverseProxy == nil {
		h.ReverseProxy = new(reverseproxy.Handler)
	}
	rp := h.ReverseProxy
	if len(rp.Upstreams) > 0 || rp.DynamicUpstreamsRaw != nil {
		return fmt.Errorf("oauthconn_proxy %s: upstreams are set by the upstream URL argument, not in the reverse proxy block", h.Connector)
	}

	raw := caddy.NewReplacer().ReplaceKnown(h.Upstream, "")
	if raw == "" && h.conn.conn == nil {
		// Neither connector nor upstream configured yet (the example
		// before any app is registered): the handler answers 503.
		return nil
	}
	u, err := parseUpstream(raw)
	if err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	h.prefix = strings.TrimRight(u.Path, "/")
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
	// The upstream is fixed by configuration: its Host, whatever the app
	// sent; and no credentials of the app's.
	if rp.Headers == nil {
		rp.Headers = new(headers.Handler)
	}
	if rp.Headers.Request == nil {
		rp.Headers.Request = new(headers.HeaderOps)
	}
	if rp.Headers.Request.Set == nil {
		rp.Headers.Request.Set = http.Header{}
	}
	rp.Headers.Request.Set.Set("Host", u.Host)
	return rp.Provision(ctx)
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
	if h.ReverseProxy != nil && len(h.ReverseProxy.Upstreams) > 0 {
		return h.ReverseProxy.Cleanup()
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *ProxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c := h.conn
	// Browsers first: a refused page must not even cause a token
	// refresh.
	origin, ok := h.browsers.check(w, r, c.name)
	if !ok {
		return nil
	}
	w = h.browsers.writer(w, origin)
	if c.conn == nil || len(h.ReverseProxy.Upstreams) == 0 {
		return writeUnavailable(w, time.Minute, apiError{Error: "connector_unconfigured", Connector: c.name,
			Message: "the connector has no client_id or upstream; configure it"})
	}
	subject, err := c.subject(r)
	if err != nil {
		return writeSubjectError(w, c.name, err)
	}
	key := tokens.Key{Connector: c.name, Subject: subject}
	tok, err := h.app.keeper.Token(r.Context(), key, c.conn, c.policy)
	if err != nil {
		return h.tokenError(w, r, err)
	}

	// A body of known length within the replay limit can be sent again
	// after a 401; it streams, with a copy kept for the retry.
	var body *replayBody
	replayable := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	if !replayable && r.ContentLength > 0 && r.ContentLength <= h.ReplayLimit {
		body = newReplayBody(r.Body, r.ContentLength)
		defer body.release()
		replayable = true
	}

	var retryErr error
	first := &firstAttempt{w: w, header: http.Header{}}
	first.decide = func() bool {
		// The upstream refused the token. Decide before its body is
		// read: retry with a fresher token, answer that the connection
		// needs authorization, or pass the 401 through.
		fresh, err := h.app.keeper.Rejected(r.Context(), key, c.conn, c.policy, tok.AccessToken)
		outcome := "passed_through"
		defer func() { h.app.telemetry.retries.WithLabelValues(c.name, outcome).Inc() }()
		switch {
		case errors.Is(err, tokens.ErrAuthorizationRequired):
			retryErr, outcome = err, "authorization_required"
			return true
		case err != nil:
			if !errors.Is(err, tokens.ErrNoRetry) {
				h.logger.Debug("no retry after upstream 401", zap.String("connector", c.name), zap.Error(err))
			}
			return false
		case !replayable:
			return false
		}
		tok, outcome = fresh, "retried"
		return true
	}
	err = h.ReverseProxy.ServeHTTP(first, h.upstreamRequest(r, tok.AccessToken, body), next)
	if !first.swallowed {
		first.trailers()
		return err
	}
	if retryErr != nil {
		return h.tokenError(w, r, retryErr)
	}
	h.logger.Debug("retrying after upstream 401 with a refreshed token", zap.String("connector", c.name))
	return h.ReverseProxy.ServeHTTP(w, h.upstreamRequest(r, tok.AccessToken, body), next)
}

// upstreamRequest is r as it goes upstream: the app's credentials and flow
// cookies removed, the connection's token attached, the upstream's path
// prefix added, and the replayable body (if any) ready for this attempt.
func (h *ProxyHandler) upstreamRequest(r *http.Request, accessToken string, body *replayBody) *http.Request {
	out := r.WithContext(r.Context())
	out.Header = r.Header.Clone()
	dropConnectionHeaders(out.Header)
	out.Header.Del("Authorization")
	out.Header.Del("Proxy-Authorization")
	if cookies := out.Header.Values("Cookie"); len(cookies) > 0 {
		h.stripCookies(out)
	}
	out.Header.Set("Authorization", "Bearer "+accessToken)
	if h.prefix != "" {
		u := *r.URL
		u.Path = h.prefix + u.Path
		if u.RawPath != "" {
			u.RawPath = h.prefix + u.RawPath
		}
		out.URL = &u
	}
	if body != nil {
		out.Body, out.GetBody = body.attempt(), nil
	}
	return out
}

// dropConnectionHeaders removes the hop-by-hop headers the app names in
// Connection, and those names from Connection, keeping only "Upgrade" (for
// WebSockets). The reverse proxy would otherwise remove the named headers
// after this handler set them: "Connection: Authorization" would strip the
// Bearer on its way upstream.
func dropConnectionHeaders(h http.Header) {
	values := h.Values("Connection")
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
			if name != "" {
				h.Del(name)
			}
		}
	}
	h.Del("Connection")
	if upgrade {
		h.Set("Connection", "Upgrade")
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
	switch {
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

// firstAttempt is the response writer of the first upstream round trip. On
// a 401 it asks decide whether to answer otherwise; if so, it swallows that
// response (headers and body) and sets swallowed, otherwise it passes
// everything through.
type firstAttempt struct {
	w      http.ResponseWriter
	header http.Header
	decide func() bool

	wrote     bool
	swallowed bool
}

func (f *firstAttempt) Header() http.Header { return f.header }

func (f *firstAttempt) WriteHeader(code int) {
	if f.wrote {
		return
	}
	if code == http.StatusUnauthorized && f.decide() {
		f.wrote, f.swallowed = true, true
		return
	}
	dst := f.w.Header()
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: the final status follows. Its headers (those
		// of a 103 Early Hints, say) belong to it alone, so the writer's
		// own are put back once it is sent.
		own := dst.Clone()
		maps.Copy(dst, f.header)
		f.w.WriteHeader(code)
		clear(dst)
		maps.Copy(dst, own)
		return
	}
	maps.Copy(dst, f.header)
	f.wrote = true
	f.w.WriteHeader(code)
}

func (f *firstAttempt) Write(b []byte) (int, error) {
	if !f.wrote {
		f.WriteHeader(http.StatusOK)
	}
	if f.swallowed {
		return len(b), nil
	}
	return f.w.Write(b)
}

// trailers passes on the upstream's trailers, which the reverse proxy sets
// in the header map after the body: announced ones (named in Trailer) and
// unannounced ones (with http.TrailerPrefix). The header map is this
// writer's own, so without this they would be dropped.
func (f *firstAttempt) trailers() {
	if !f.wrote || f.swallowed {
		return
	}
	dst := f.w.Header()
	announced := map[string]bool{}
	for _, v := range dst.Values("Trailer") {
		for name := range strings.SplitSeq(v, ",") {
			announced[http.CanonicalHeaderKey(textproto.TrimString(name))] = true
		}
	}
	for k, v := range f.header {
		if announced[k] || strings.HasPrefix(k, http.TrailerPrefix) {
			dst[k] = v
		}
	}
}

// Flush passes flushes through, so streamed responses stay streamed.
func (f *firstAttempt) Flush() {
	if f.swallowed || !f.wrote {
		return
	}
	http.NewResponseController(f.w).Flush()
}

// Unwrap gives http.ResponseController (hijacking for upgrades, deadlines)
// the underlying writer.
func (f *firstAttempt) Unwrap() http.ResponseWriter { return f.w }

// Interface guards.
var (
	_ caddy.Provisioner           = (*ProxyHandler)(nil)
	_ caddy.CleanerUpper          = (*ProxyHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ProxyHandler)(nil)
	_ http.Flusher                = (*firstAttempt)(nil)
)
