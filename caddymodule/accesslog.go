package caddymodule

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// accessLog keeps authorization codes, states and PKCE challenges out of
// Caddy's access logs. Caddy logs each request's URI as it arrived, and the
// response headers; for the callback that is "?code=…&state=…", and the
// authorize redirect's Location holds the state and the PKCE challenge.
// Caddy copies the request for its log before any handler runs, so a
// handler cannot change what that entry says; instead, for these routes,
// the handler tells Caddy to skip its entry (the log_skip variable) and
// writes the same entry itself, to the same loggers, with those values
// replaced by REDACTED. Nothing needs configuring: a site's log directive
// gets redacted entries as it is.
type accessLog struct {
	// logger is Caddy's access logger: the http app's, named log.access.
	logger *zap.Logger
}

func newAccessLog(ctx caddy.Context) *accessLog {
	return &accessLog{logger: ctx.Logger(caddyhttp.App{}).Named("log.access")}
}

// redacted is what replaces a secret in a log entry.
const redacted = "REDACTED"

// callbackParams are the callback's query parameters whose values are
// logged; every other value (code, state, anything unknown) is redacted.
var callbackParams = map[string]bool{"iss": true, "scope": true, "error": true, "error_description": true}

// serve runs next for r, logging the request as Caddy would, with callback
// parameters redacted when callback is set and any Location's query
// removed. Requests Caddy would not log are served as they are.
func (l *accessLog) serve(w http.ResponseWriter, r *http.Request, callback bool, next func(http.ResponseWriter, *http.Request)) {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if skip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.LogSkipVar).(bool); skip || srv == nil || srv.Logs == nil || !logsHost(srv.Logs, r.Host) {
		next(w, r)
		return
	}
	caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)

	// What Caddy's entry would say about the request, taken before the
	// handler runs, as Caddy does.
	logged := r.Clone(r.Context())
	logged.RequestURI = redactURI(r.RequestURI, callback)
	var body *countingReader
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingReader{ReadCloser: r.Body}
		r.Body = body
	}
	rec := caddyhttp.NewResponseRecorder(w, nil, nil)
	start := time.Now()
	next(rec, r)
	duration := time.Since(start)

	status := rec.Status()
	level := zapcore.InfoLevel
	if status >= 500 {
		level = zapcore.ErrorLevel
	}
	if name, ok := caddyhttp.GetVar(r.Context(), caddyhttp.LogLevelVar).(string); ok {
		if lv, err := zapcore.ParseLevel(name); err == nil && lv >= zapcore.DebugLevel && lv <= zapcore.ErrorLevel {
			level = lv
		}
	}
	read := 0
	if body != nil {
		read = body.n
	}
	creds := srv.Logs.ShouldLogCredentials
	respHeaders := rec.Header().Clone()
	if loc := respHeaders.Get("Location"); loc != "" {
		respHeaders.Set("Location", redactLocation(loc))
	}
	fields := []zapcore.Field{
		zap.Object("request", caddyhttp.LoggableHTTPRequest{Request: logged, ShouldLogCredentials: creds}),
		zap.Int("bytes_read", read),
		zap.String("user_id", userID(r)),
		zap.Duration("duration", duration),
		zap.Int("size", rec.Size()),
		zap.Int("status", status),
		zap.Object("resp_headers", caddyhttp.LoggableHTTPHeader{Header: respHeaders, ShouldLogCredentials: creds}),
	}
	for _, lg := range l.loggers(srv.Logs, r) {
		if ce := lg.Check(level, "handled request"); ce != nil {
			ce.Write(fields...)
		}
	}
}

// logsHost reports whether Caddy logs requests for host, as its server
// decides before handling them.
func logsHost(logs *caddyhttp.ServerLogConfig, host string) bool {
	host = hostOnly(host)
	for name := range logs.LoggerNames {
		if certmagic.MatchWildcard(host, name) {
			return true
		}
	}
	for _, skip := range logs.SkipHosts {
		if certmagic.MatchWildcard(host, skip) {
			return false
		}
	}
	return !logs.SkipUnmappedHosts
}

// loggers returns the access loggers of r, chosen as Caddy chooses them:
// the names a log_name directive set, else those mapped to the host (the
// site's log directive), else the default.
func (l *accessLog) loggers(logs *caddyhttp.ServerLogConfig, r *http.Request) []*zap.Logger {
	var names []string
	if set, ok := caddyhttp.GetVar(r.Context(), caddyhttp.AccessLoggerNameVarKey).([]any); ok {
		for _, n := range set {
			s, _ := n.(string)
			names = append(names, s)
		}
	} else {
		names = loggerNames(logs, hostOnly(r.Host))
	}
	out := make([]*zap.Logger, 0, len(names))
	for _, n := range names {
		if n == "" {
			out = append(out, l.logger)
		} else {
			out = append(out, l.logger.Named(n))
		}
	}
	return out
}

// loggerNames finds the logger names mapped to host: by exact name, then
// by wildcard, else the server's default.
func loggerNames(logs *caddyhttp.ServerLogConfig, host string) []string {
	host = strings.ToLower(host)
	if names, ok := logs.LoggerNames[host]; ok {
		return names
	}
	labels := strings.Split(host, ".")
	for i := range labels {
		if labels[i] == "" {
			continue
		}
		labels[i] = "*"
		if names, ok := logs.LoggerNames[strings.Join(labels, ".")]; ok {
			return names
		}
	}
	return []string{logs.DefaultLoggerName}
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// redactURI returns a request URI fit for the log. The callback's
// parameters are cut at '&' and ';' alike, so that no value can hide in a
// parameter the parser would not see, and each value not in callbackParams
// is replaced.
func redactURI(uri string, callback bool) string {
	path, query, ok := strings.Cut(uri, "?")
	if !callback || !ok {
		return uri
	}
	var b strings.Builder
	b.WriteString(path)
	b.WriteByte('?')
	for i, part := range strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == ';' }) {
		if i > 0 {
			b.WriteByte('&')
		}
		key, _, _ := strings.Cut(part, "=")
		if name, err := url.QueryUnescape(key); err == nil && callbackParams[name] {
			b.WriteString(part)
			continue
		}
		b.WriteString(key + "=" + redacted)
	}
	return b.String()
}

// redactLocation removes the query of a redirect's target: the provider's
// authorization URL carries the state and the PKCE challenge.
func redactLocation(loc string) string {
	if before, _, ok := strings.Cut(loc, "?"); ok {
		return before + "?" + redacted
	}
	return loc
}

// countingReader counts the request body bytes read, for bytes_read.
type countingReader struct {
	io.ReadCloser
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += n
	return n, err
}
