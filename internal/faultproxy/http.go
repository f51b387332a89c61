package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what an HTTP proxy does to the requests it matches. The zero
// Fault forwards everything unchanged. Status, Delay, ResponseDelay and
// Hang combine: a request is held (Hang), then waits Delay, then is answered
// Status, or else forwarded with its answer held back ResponseDelay.
type Fault struct {
	// Match selects the requests the fault applies to; nil: every
	// request. It sees the request with its form body parsed into
	// PostForm (the body itself stays unread for forwarding).
	Match func(*http.Request) bool

	// Status, when not zero, is answered without forwarding, with Body
	// (default: a JSON error that both Vault's client and OAuth 2.0
	// clients understand) and, if set, a Retry-After header.
	Status     int
	Body       string
	RetryAfter string

	// Delay holds a request this long before it is forwarded or
	// answered. A request whose client gives up meanwhile is never
	// forwarded, so a delay alone never makes the target act on a
	// request nobody waits for.
	Delay time.Duration

	// ResponseDelay holds the target's answer this long before relaying
	// it: the target has acted on the request (a token endpoint has
	// rotated the refresh token) and the client may give up before it
	// hears so.
	ResponseDelay time.Duration

	// Hang holds requests until Release is called (they then go on as
	// if Hang were not set) or the fault is replaced (they are then
	// handled by the new fault), or their client gives up.
	Hang bool

	// Times limits the fault to the first Times matching requests; zero
	// means every one.
	Times int
}

// DefaultBody is the body of a Status answer when Fault.Body is empty.
const DefaultBody = `{"error":"temporarily_unavailable","errors":["fault injected by the test"]}`

// OAuthError returns a fault that answers every token request with an RFC
// 6749 section 5.2 error response: status (400 or 401) and the error code,
// such as invalid_client or invalid_grant.
func OAuthError(status int, code string) Fault {
	b, _ := json.Marshal(map[string]string{"error": code})
	return Fault{Status: status, Body: string(b)}
}

// Event is what an HTTP proxy saw of one request. It never holds a request
// or response value, so it is safe to log.
type Event struct {
	// Kind is the request's class, as the proxy's classifier named it.
	Kind         string
	Method, Path string
	// Faulted means the fault answered; Forwarded that the request
	// reached the target.
	Faulted, Forwarded bool
	// Status is what the client was answered (0 while in flight, or if
	// nothing was written).
	Status int
	// Canceled means the client went away before its answer.
	Canceled bool
	// Start is when the request arrived; Duration how long it took
	// (0 while in flight).
	Start    time.Time
	Duration time.Duration
	// InFlight is true until the proxy is done with the request.
	InFlight bool
}

// HTTP is a reverse proxy to a target URL that applies the current Fault
// and records every request. For token endpoints it also tracks the refresh
// tokens redeemed and issued; their values stay in memory, are never logged
// and are only compared.
type HTTP struct {
	// URL is the proxy's base URL (http://127.0.0.1:port).
	URL string

	target   *url.URL
	rp       *httputil.ReverseProxy
	classify func(*http.Request) string
	srv      *http.Server
	stop     chan struct{}

	mu         sync.Mutex
	fault      *activeFault
	gen        uint64
	release    chan struct{}
	closed     bool
	events     []*Event
	inflightRT map[string]int
	redeemed   map[string]int
	concurrent int
	issued     []string
}

type activeFault struct {
	Fault
	matched atomic.Int64
}

type ctxKey struct{}

// reqState travels with a forwarded request to the response hooks.
type reqState struct {
	ev            *Event
	grant         string
	responseDelay time.Duration
}

// NewHTTP starts a proxy to target (a base URL) on a loopback port; it stops
// when the test ends. classify names each request's kind for counting (nil:
// its method); see VaultKind and GrantType.
func NewHTTP(tb testing.TB, target string, classify func(*http.Request) string) *HTTP {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatalf("faultproxy: target: %v", err)
	}
	if classify == nil {
		classify = func(r *http.Request) string { return r.Method }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: %v", err)
	}
	p := &HTTP{
		URL: "http://" + ln.Addr().String(), target: u, classify: classify, stop: make(chan struct{}),
		release: make(chan struct{}), inflightRT: map[string]int{}, redeemed: map[string]int{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		// A transport of its own, so that cutting the proxy's client
		// connections never touches other tests' pools.
		Transport:      &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
		ModifyResponse: p.inspect,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(ln)
	tb.Cleanup(p.Close)
	return p
}

// Set makes f the fault in force. Requests held by the previous fault are
// handed to f.
func (p *HTTP) Set(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = &activeFault{Fault: f}
	p.gen++
	close(p.release)
	p.release = make(chan struct{})
}

// Clear forwards everything again; held requests are forwarded.
func (p *HTTP) Clear() { p.Set(Fault{}) }

// Release lets the requests held now go on, forwarded unless the fault
// also answers a Status. Later requests are held again.
func (p *HTTP) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.release)
	p.release = make(chan struct{})
}

// Close stops the proxy: held and delayed requests are dropped. It is
// called when the test ends; calling it again does nothing.
func (p *HTTP) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	p.srv.Close()
	p.rp.Transport.(*http.Transport).CloseIdleConnections()
}

// current returns the fault that applies to r (nil: none), with the
// generation and release channel it was read with.
func (p *HTTP) current(r *http.Request) (*activeFault, uint64, chan struct{}) {
	p.mu.Lock()
	f, gen, ch := p.fault, p.gen, p.release
	p.mu.Unlock()
	if f == nil || f.isZero() {
		return nil, gen, ch
	}
	if f.Match != nil && !f.Match(r) {
		return nil, gen, ch
	}
	if n := f.matched.Add(1); f.Times > 0 && n > int64(f.Times) {
		return nil, gen, ch
	}
	return f, gen, ch
}

func (f Fault) isZero() bool {
	return f.Match == nil && f.Status == 0 && f.Body == "" && f.RetryAfter == "" && f.Delay == 0 &&
		f.ResponseDelay == 0 && !f.Hang && f.Times == 0
}

// ServeHTTP applies the fault in force to r and records it.
func (p *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		r.PostForm, _ = url.ParseQuery(string(body))
	}
	ev := &Event{Kind: p.classify(r), Method: r.Method, Path: r.URL.Path, Start: time.Now(), InFlight: true}
	grant := r.PostForm.Get("grant_type")
	rt := ""
	if grant == "refresh_token" {
		rt = r.PostForm.Get("refresh_token")
	}
	p.mu.Lock()
	p.events = append(p.events, ev)
	if rt != "" {
		if p.inflightRT[rt] > 0 {
			p.concurrent++
		}
		p.inflightRT[rt]++
	}
	p.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		p.mu.Lock()
		ev.Status, ev.Duration, ev.InFlight = sw.status, time.Since(ev.Start), false
		ev.Canceled = r.Context().Err() != nil
		if rt != "" {
			if p.inflightRT[rt]--; p.inflightRT[rt] == 0 {
				delete(p.inflightRT, rt)
			}
		}
		p.mu.Unlock()
	}()

	f := p.apply(r)
	if f == nil || r.Context().Err() != nil {
		return
	}
	if f.Status != 0 {
		p.mu.Lock()
		ev.Faulted = true
		p.mu.Unlock()
		b := f.Body
		if b == "" {
			b = DefaultBody
		}
		sw.Header().Set("Content-Type", "application/json")
		if f.RetryAfter != "" {
			sw.Header().Set("Retry-After", f.RetryAfter)
		}
		sw.WriteHeader(f.Status)
		io.WriteString(sw, b)
		return
	}
	p.mu.Lock()
	ev.Forwarded = true
	if rt != "" {
		p.redeemed[rt]++
	}
	p.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	st := &reqState{ev: ev, grant: grant, responseDelay: f.ResponseDelay}
	p.rp.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

// apply holds and delays r as the faults in force say, and returns what is
// left to do: answer a status or forward (a zero Fault). It returns nil if
// the client or the proxy went away meanwhile.
func (p *HTTP) apply(r *http.Request) *Fault {
	for {
		af, gen, ch := p.current(r)
		if af == nil {
			return &Fault{}
		}
		f := af.Fault
		if f.Hang {
			select {
			case <-ch:
			case <-r.Context().Done():
				return nil
			case <-p.stop:
				return nil
			}
			p.mu.Lock()
			replaced := p.gen != gen
			p.mu.Unlock()
			if replaced {
				continue
			}
		}
		if f.Delay > 0 && !p.wait(r.Context(), f.Delay) {
			return nil
		}
		return &f
	}
}

// wait sleeps d unless ctx ends or the proxy stops first; it reports
// whether it slept the whole time.
func (p *HTTP) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-p.stop:
	}
	return false
}

// inspect notes the refresh token a successful token response issues, then
// holds the response back if the fault says so.
func (p *HTTP) inspect(resp *http.Response) error {
	st, _ := resp.Request.Context().Value(ctxKey{}).(*reqState)
	if st == nil {
		return nil
	}
	if st.grant != "" && resp.StatusCode == http.StatusOK {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		var out struct {
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(b, &out) == nil && out.RefreshToken != "" {
			p.mu.Lock()
			p.issued = append(p.issued, out.RefreshToken)
			p.mu.Unlock()
		}
	}
	if st.responseDelay > 0 && !p.wait(resp.Request.Context(), st.responseDelay) {
		return errors.New("faultproxy: the client went away while its answer was held")
	}
	return nil
}

// Events returns a copy of every request seen so far.
func (p *HTTP) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Event, len(p.events))
	for i, e := range p.events {
		out[i] = *e
	}
	return out
}

// Count returns how many requests of a kind arrived ("" counts all).
func (p *HTTP) Count(kind string) int {
	return p.count(func(e *Event) bool { return kind == "" || e.Kind == kind })
}

// Faulted returns how many requests of a kind the fault answered.
func (p *HTTP) Faulted(kind string) int {
	return p.count(func(e *Event) bool { return (kind == "" || e.Kind == kind) && e.Faulted })
}

// Succeeded returns how many requests of a kind were forwarded and
// answered 2xx to a client that was still waiting.
func (p *HTTP) Succeeded(kind string) int {
	return p.count(func(e *Event) bool {
		return (kind == "" || e.Kind == kind) && e.Forwarded && !e.InFlight && !e.Canceled && e.Status >= 200 && e.Status < 300
	})
}

// InFlight returns how many requests of a kind are being handled now.
func (p *HTTP) InFlight(kind string) int {
	return p.count(func(e *Event) bool { return (kind == "" || e.Kind == kind) && e.InFlight })
}

func (p *HTTP) count(f func(*Event) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.events {
		if f(e) {
			n++
		}
	}
	return n
}

// RedeemedTwice returns how many distinct refresh tokens were forwarded to
// the token endpoint more than once. A provider with strict rotation (Ory
// Hydra) treats a second redemption as theft and revokes the grant.
func (p *HTTP) RedeemedTwice() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.redeemed {
		if c > 1 {
			n++
		}
	}
	return n
}

// ConcurrentRedemptions returns how many refresh requests arrived while
// another request with the same refresh token was still being handled:
// two redemptions racing, whatever the faults made of them.
func (p *HTTP) ConcurrentRedemptions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.concurrent
}

// Redemptions returns how many refresh requests were forwarded.
func (p *HTTP) Redemptions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.redeemed {
		n += c
	}
	return n
}

// LastIssued returns the refresh token of the last successful token
// response relayed (empty if none). Compare it; never log it.
func (p *HTTP) LastIssued() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.issued) == 0 {
		return ""
	}
	return p.issued[len(p.issued)-1]
}

// Issued reports whether rt was issued by a token response relayed here.
func (p *HTTP) Issued(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.issued {
		if v == rt {
			return true
		}
	}
	return false
}

// statusWriter remembers the status written to the client.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes flushes through for streamed answers.
func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// VaultKind classifies Vault API requests for counting: "write" (PUT or
// POST of a KV v2 secret), "read", "delete", "list", "health", or
// "other".
func VaultKind(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1/sys/health"):
		return "health"
	case r.Method == "LIST" || r.URL.Query().Get("list") == "true":
		return "list"
	case r.Method == http.MethodDelete:
		return "delete"
	case !strings.Contains(p, "/data/") && !strings.Contains(p, "/metadata/"):
		return "other"
	case r.Method == http.MethodPut || r.Method == http.MethodPost:
		return "write"
	case r.Method == http.MethodGet:
		return "read"
	}
	return "other"
}

// GrantType classifies token endpoint requests by their grant_type
// ("refresh_token", "authorization_code", …; "other" without one).
func GrantType(r *http.Request) string {
	if g := r.PostForm.Get("grant_type"); g != "" {
		return g
	}
	return "other"
}

// KVWrite matches writes (PUT or POST) of KV v2 secrets at mount whose path
// below the mount starts with under, such as "prefix/tokens/": with it a
// test fails the writes of token records and lets others (authorization
// flows, say) through. Combine it with a condition of the test's own to
// fail only some of them, such as those after a rotation.
func KVWrite(mount, under string) func(*http.Request) bool {
	pre := "/v1/" + strings.Trim(mount, "/") + "/data/" + strings.TrimLeft(under, "/")
	return func(r *http.Request) bool {
		return (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.HasPrefix(r.URL.Path, pre)
	}
}

// Grant matches token requests of one grant type.
func Grant(grantType string) func(*http.Request) bool {
	return func(r *http.Request) bool { return r.PostForm.Get("grant_type") == grantType }
}
