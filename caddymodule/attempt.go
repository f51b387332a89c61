package caddymodule

import (
	"maps"
	"net/http"
)

// firstAttempt is the response writer of the first upstream round trip. It
// writes through to w, but on a 401 (or 403) it first asks its exchange
// whether to answer otherwise (retry); if so, it swallows that response
// (status, body and trailers) and puts w's header back as it was before
// the attempt, so that the retry's answer carries none of the refused
// one's headers. Writing through, rather than into a header map of its
// own copied over at the status, spares every proxied request a map and a
// copy, and lets trailers and 1xx responses pass as Caddy's reverse proxy
// writes them.
type firstAttempt struct {
	w http.ResponseWriter
	// x decides for proxied requests of connections; decide, if x is
	// nil, for the other grants' (grant.go).
	x      *exchange
	decide func(status int) bool
	before headerSnapshot

	wrote     bool
	swallowed bool
}

// begin starts the attempt on w, remembering w's header.
func (f *firstAttempt) begin(w http.ResponseWriter) {
	f.w = w
	f.before.take(w.Header())
}

// undo puts w's header back as it was when the attempt began.
func (f *firstAttempt) undo() { f.before.restore(f.w.Header()) }

func (f *firstAttempt) Header() http.Header { return f.w.Header() }

// refused asks whether a 401 or 403 is answered otherwise.
func (f *firstAttempt) refused(status int) bool {
	if f.x != nil {
		return f.x.retry(status)
	}
	return f.decide != nil && f.decide(status)
}

func (f *firstAttempt) WriteHeader(code int) {
	if f.wrote {
		return
	}
	if (code == http.StatusUnauthorized || code == http.StatusForbidden) && f.refused(code) {
		f.wrote, f.swallowed = true, true
		f.undo()
		return
	}
	// Informational answers (a 103 Early Hints, say) precede the final
	// one; Caddy's reverse proxy removes their headers after sending.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		f.wrote = true
	}
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

// headerSnapshot is a header map as it was at some moment, kept without
// copying the few headers a response has before the upstream's are added
// (the map's value slices are only ever replaced or appended to, never
// changed in place, so keeping them keeps their values).
type headerSnapshot struct {
	n    int
	keys [4]string // enough for the headers Caddy sets before a handler
	vals [4][]string
	more http.Header // a copy, when there were more than fit above
}

func (s *headerSnapshot) take(h http.Header) {
	s.n, s.more = 0, nil
	if len(h) > len(s.keys) {
		s.more = h.Clone()
		return
	}
	for k, v := range h {
		s.keys[s.n], s.vals[s.n] = k, v
		s.n++
	}
}

func (s *headerSnapshot) restore(h http.Header) {
	clear(h)
	if s.more != nil {
		maps.Copy(h, s.more)
		return
	}
	for i := range s.n {
		h[s.keys[i]] = s.vals[i]
	}
}

// Interface guards.
var _ http.Flusher = (*firstAttempt)(nil)
