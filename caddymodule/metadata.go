package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// A connection's metadata (Salesforce's instance_url, Atlassian's cloud id)
// can name its upstream: oauthconn_proxy's upstream URL, path prefix and
// header_up values may hold {oauthconn.metadata.<name>}. Such an upstream is
// resolved on every request, after the token lookup, and confined: it must
// be https (plain http only for a loopback host) on a host of the
// connector's allowed_hosts, or nothing is sent and the app gets 502
// upstream_not_allowed.

// metadataPlaceholder matches {oauthconn.metadata.<name>}.
var metadataPlaceholder = regexp.MustCompile(`\{oauthconn\.metadata\.([^{}]*)\}`)

// Placeholders set on a request whose upstream depends on metadata: the
// address dialed and the Host header sent.
const (
	upstreamDialPlaceholder = "{oauthconn.upstream.hostport}"
	upstreamHostPlaceholder = "{oauthconn.upstream.host}"
)

// provisionMetadata fills in the preset's allowed hosts and checks the
// metadata settings, for configured and unconfigured connectors alike, so
// that a proxy's upstream can be checked against them at load.
func (c *Connector) provisionMetadata(cfg *connector.Config) error {
	connector.MetadataDefaults(cfg)
	if err := cfg.ValidateMetadata(); err != nil {
		return err
	}
	allowed, err := cfg.AllowedHostPatterns()
	if err != nil {
		return err
	}
	c.allowed = allowed
	c.metadata = map[string]bool{}
	for _, name := range cfg.MetadataNames() {
		c.metadata[name] = true
	}
	return nil
}

// connectMetadata gathers a new connection's metadata: the token
// response's fields, the callback query's parameters and the values of the
// discovery request made with the new access token.
func connectMetadata(ctx context.Context, conn *connector.Connector, query url.Values, ot *oauth2.Token) (map[string]string, error) {
	out := map[string]string{}
	maps.Copy(out, conn.PickMetadata(ot))
	maps.Copy(out, conn.CallbackMetadata(query))
	found, err := conn.DiscoverMetadata(ctx, ot.AccessToken)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, found)
	return out, nil
}

// unmarshalMetadata parses the connector options of metadata (see
// App.UnmarshalCaddyfile); names and patterns are checked here, so that a
// mistake is reported with its line.
func (c *Connector) unmarshalMetadata(d *caddyfile.Dispenser, name, opt string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("connector %s: %s needs arguments", name, opt)
	}
	names := func(dst *[]string, list []string) error {
		for _, n := range list {
			if err := connector.ValidMetadataName(n); err != nil {
				return d.Errf("connector %s: %s: %v", name, opt, err)
			}
		}
		*dst = append(*dst, list...)
		return nil
	}
	switch opt {
	case "metadata":
		return names(&c.Metadata, args)
	case "callback_metadata":
		return names(&c.CallbackMetadata, args)
	case "allowed_hosts":
		for _, p := range args {
			if strings.Contains(p, "{") {
				continue // a placeholder, checked once expanded
			}
			if _, err := connector.ParseHostPattern(p); err != nil {
				return d.Errf("connector %s: %v", name, err)
			}
		}
		c.AllowedHosts = append(c.AllowedHosts, args...)
		return nil
	}
	if c.MetadataDiscovery != nil {
		return d.Errf("connector %s: metadata_discovery may be given once", name)
	}
	if len(args) < 3 || len(args)%2 == 0 {
		return d.Errf("connector %s: metadata_discovery takes a URL, then pairs of a metadata name and a JSON path", name)
	}
	md := &MetadataDiscovery{URL: args[0], Pick: map[string]string{}}
	for i := 1; i < len(args); i += 2 {
		if err := connector.ValidMetadataName(args[i]); err != nil {
			return d.Errf("connector %s: metadata_discovery: %v", name, err)
		}
		md.Pick[args[i]] = args[i+1]
	}
	c.MetadataDiscovery = md
	return nil
}

// setMetadataPlaceholders makes the connection's metadata available to the
// reverse proxy's header operations as {oauthconn.metadata.<name>}.
func setMetadataPlaceholders(r *http.Request, md tokens.Metadata) {
	if md.Len() == 0 {
		return
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	for k, v := range md.All() {
		repl.Set("oauthconn.metadata."+k, v)
	}
}

// checkMetadataNames refuses placeholders of metadata the connector does
// not keep: they would always be empty.
func checkMetadataNames(c *Connector, where, s string) error {
	for _, m := range metadataPlaceholder.FindAllStringSubmatch(s, -1) {
		if !c.metadata[m[1]] {
			return fmt.Errorf("%s uses {oauthconn.metadata.%s}, but connector %s keeps no metadata of that name (add it to the connector's metadata, callback_metadata or metadata_discovery)", where, m[1], c.name)
		}
	}
	return nil
}

// templatePart is literal text or a metadata value of an upstream
// template.
type templatePart struct {
	text string
	name string // metadata name; empty for text
	// inPath is true when the value lands in the URL's path: it is then
	// path-escaped, so that it makes one segment and no query.
	inPath bool
}

// metadataUpstream is an upstream URL that depends on metadata.
type metadataUpstream struct {
	raw     string
	parts   []templatePart
	allowed []connector.HostPattern
}

// target is where one request goes: the upstream URL, the address to dial
// and the path prefix (decoded and escaped).
type target struct {
	dial, host        string
	prefix, rawPrefix string
	plain             bool // http, on a loopback host
	// exact makes "/" (or nothing) the prefix itself, without a slash
	// added: a resource connector's upstream is the resource URL.
	exact bool
}

// parseMetadataUpstream reads an upstream template. Only
// {oauthconn.metadata.*} placeholders may remain in it, each of a name the
// connector keeps; a host given literally must be allowed.
func parseMetadataUpstream(c *Connector, raw string) (*metadataUpstream, error) {
	if err := checkMetadataNames(c, "the upstream", raw); err != nil {
		return nil, err
	}
	if len(c.allowed) == 0 {
		return nil, fmt.Errorf("the upstream %s depends on the connection's metadata: list the hosts it may resolve to with allowed_hosts on connector %s", raw, c.name)
	}
	m := &metadataUpstream{raw: raw, allowed: c.allowed}
	literal := ""
	last := 0
	for _, loc := range metadataPlaceholder.FindAllStringSubmatchIndex(raw, -1) {
		text := raw[last:loc[0]]
		if strings.ContainsAny(text, "{}") {
			return nil, fmt.Errorf("the upstream %s may hold no placeholder but {oauthconn.metadata.*} and {env.*}", raw)
		}
		literal += text
		_, rest, hasScheme := strings.Cut(literal, "://")
		inPath := strings.Contains(rest, "/") || (!hasScheme && strings.Contains(literal, "/"))
		m.parts = append(m.parts, templatePart{text: text}, templatePart{name: raw[loc[2]:loc[3]], inPath: inPath})
		last = loc[1]
	}
	if tail := raw[last:]; tail != "" {
		if strings.ContainsAny(tail, "{}") {
			return nil, fmt.Errorf("the upstream %s may hold no placeholder but {oauthconn.metadata.*} and {env.*}", raw)
		}
		m.parts = append(m.parts, templatePart{text: tail})
	}
	// A scheme and host written out are checked now, not on every
	// request's refusal.
	if first := m.parts[0].text; strings.Contains(first, "://") {
		if _, rest, _ := strings.Cut(first, "://"); strings.Contains(rest, "/") {
			u, err := parseUpstream(first)
			if err != nil {
				return nil, err
			}
			if _, err := m.check(u); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// errMetadataMissing means the connection lacks a value its upstream needs.
type errMetadataMissing struct{ name string }

func (e errMetadataMissing) Error() string {
	return fmt.Sprintf("the connection has no metadata %q, which its upstream needs; connect again", e.name)
}

// errNotAllowed means the resolved upstream is refused; its text names the
// upstream's host (metadata, never a secret) and why.
type errNotAllowed struct{ why string }

func (e errNotAllowed) Error() string { return e.why }

// resolve builds the upstream of a connection with metadata md and checks
// it.
func (m *metadataUpstream) resolve(md tokens.Metadata) (target, error) {
	var b strings.Builder
	for i, p := range m.parts {
		if p.name == "" {
			b.WriteString(p.text)
			continue
		}
		v, ok := md.Get(p.name)
		if !ok {
			return target{}, errMetadataMissing{p.name}
		}
		switch {
		case p.inPath:
			v = url.PathEscape(v)
		case i+1 < len(m.parts) && strings.HasPrefix(m.parts[i+1].text, "/"):
			// A base URL followed by a path: its own trailing
			// slash would make an empty segment.
			v = strings.TrimRight(v, "/")
		}
		b.WriteString(v)
	}
	u, err := parseUpstream(b.String())
	if err != nil {
		return target{}, errNotAllowed{"the connection's metadata makes an upstream that is not a URL of the form https://host[:port][/path]"}
	}
	return m.check(u)
}

// check applies the confinement rules to a resolved upstream.
func (m *metadataUpstream) check(u *url.URL) (target, error) {
	if err := connector.ValidHost(u.Host); err != nil {
		return target{}, errNotAllowed{fmt.Sprintf("the upstream host %q is not a host name or IP address: %v", u.Host, err)}
	}
	if !connector.SecureOrLoopback(u) {
		return target{}, errNotAllowed{fmt.Sprintf("the upstream %s://%s is plain http on a host that is not loopback; only https is allowed", u.Scheme, u.Host)}
	}
	if !connector.MatchAny(m.allowed, u.Scheme, u.Host) {
		return target{}, errNotAllowed{fmt.Sprintf("the upstream host %s is not in the connector's allowed_hosts (%s)", u.Host, patterns(m.allowed))}
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return target{}, errNotAllowed{"the upstream's path has a . or .. segment"}
		}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return target{
		dial: net.JoinHostPort(u.Hostname(), port), host: u.Host,
		prefix: strings.TrimRight(u.Path, "/"), rawPrefix: strings.TrimRight(u.EscapedPath(), "/"),
		plain: u.Scheme == "http",
	}, nil
}

func patterns(ps []connector.HostPattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// provisionMetadataUpstream sets up the reverse proxy for an upstream that
// depends on metadata: one upstream whose dial address and Host are the
// request's placeholders, TLS on for https. When the scheme itself comes
// from metadata, a second reverse proxy without TLS serves the loopback
// http upstreams that the rules allow.
func (h *ProxyHandler) provisionMetadataUpstream(ctx caddy.Context, raw string) error {
	if !h.conn.authorizes() {
		return fmt.Errorf("oauthconn_proxy %s: the upstream uses connection metadata, but grant %s has no connections", h.Connector, h.conn.grant)
	}
	m, err := parseMetadataUpstream(h.conn, raw)
	if err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	h.meta = m
	first := m.parts[0].text
	schemeHTTPS := strings.HasPrefix(first, "https://")
	schemeHTTP := strings.HasPrefix(first, "http://")
	if !schemeHTTPS && !schemeHTTP {
		// Both schemes are possible: keep a copy of the configuration
		// for plain http before TLS is turned on.
		b, err := json.Marshal(h.ReverseProxy)
		if err != nil {
			return err
		}
		h.plain = new(reverseproxy.Handler)
		if err := json.Unmarshal(b, h.plain); err != nil {
			return err
		}
		if err := h.setDynamic(ctx, h.plain, false); err != nil {
			return err
		}
	}
	return h.setDynamic(ctx, h.ReverseProxy, !schemeHTTP)
}

// setDynamic points rp at the request's resolved upstream and provisions
// it.
func (h *ProxyHandler) setDynamic(ctx caddy.Context, rp *reverseproxy.Handler, tls bool) error {
	rp.Upstreams = reverseproxy.UpstreamPool{{Dial: upstreamDialPlaceholder}}
	var err error
	if tls {
		rp.TransportRaw, err = withTLS(rp.TransportRaw)
	} else {
		rp.TransportRaw, err = withoutTLS(rp.TransportRaw)
	}
	if err != nil {
		return fmt.Errorf("oauthconn_proxy %s: %w", h.Connector, err)
	}
	setHost(rp, upstreamHostPlaceholder)
	return rp.Provision(ctx)
}

// withoutTLS removes TLS from an HTTP transport: the loopback http
// upstream of a connector whose scheme comes from metadata.
func withoutTLS(transport json.RawMessage) (json.RawMessage, error) {
	if transport == nil {
		return nil, nil
	}
	m := map[string]any{}
	if err := json.Unmarshal(transport, &m); err != nil {
		return nil, fmt.Errorf("reading transport: %w", err)
	}
	if m["protocol"] != "http" {
		return nil, errors.New("an upstream from metadata needs the http transport")
	}
	delete(m, "tls")
	return json.Marshal(m)
}

// route returns the reverse proxy and target of a request for a connection
// with metadata md: the static ones, or those md names.
func (h *ProxyHandler) route(r *http.Request, md tokens.Metadata) (*reverseproxy.Handler, *target, error) {
	setMetadataPlaceholders(r, md)
	if h.meta == nil {
		return h.ReverseProxy, &h.static, nil
	}
	t, err := h.meta.resolve(md)
	if err != nil {
		return nil, nil, err
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return nil, nil, errors.New("no replacer in the request's context")
	}
	repl.Set("oauthconn.upstream.hostport", t.dial)
	repl.Set("oauthconn.upstream.host", t.host)
	if t.plain && h.plain != nil {
		return h.plain, &t, nil
	}
	return h.ReverseProxy, &t, nil
}

// upstreamError answers a request whose upstream could not be resolved:
// nothing was sent.
func (h *ProxyHandler) upstreamError(w http.ResponseWriter, err error) error {
	name := h.conn.name
	var missing errMetadataMissing
	var refused errNotAllowed
	switch {
	case errors.As(err, &missing):
		h.logger.Warn("the connection lacks metadata its upstream needs", zap.String("connector", name), zap.Error(err))
		return writeJSON(w, http.StatusBadGateway, apiError{Error: "metadata_missing", Connector: name,
			AuthorizeURL: h.app.authorizeURL(name), Message: err.Error()})
	case errors.As(err, &refused):
		h.logger.Warn("refused an upstream named by the connection's metadata; nothing was sent", zap.String("connector", name), zap.Error(err))
		return writeJSON(w, http.StatusBadGateway, apiError{Error: "upstream_not_allowed", Connector: name,
			Message: err.Error() + "; nothing was sent"})
	}
	return err
}
