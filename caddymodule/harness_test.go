package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testhttp"
)

// testServer is Caddy running in this process on a loopback port, with the
// oauthconn app on the file store in a temporary directory, a token endpoint
// and an upstream API on httptest servers. It needs no other server, so the
// tests using it run with go test -short.
type testServer struct {
	base     string // http://127.0.0.1:<port>, the site
	addr     string // 127.0.0.1:<port>
	storeDir string // the test's directory: Caddy's storage, the records
	src      string // the Caddyfile loaded
	as       *fakeAS
	up       *fakeUpstream
}

// testOptions are additions to the test Caddyfile.
type testOptions struct {
	publicURL string // default: the site's own URL
	global    string // global options besides oauthconn
	app       string // oauthconn options
	connector string // options of connector demo; AS_URL stands for the token endpoint's server
	site      string // site directives before oauthconn_connect
	proxy     string // subdirectives of oauthconn_proxy
	upstream  string // oauthconn_proxy's upstream; default UP_URL, the upstream's URL
}

const testCaddyfile = `{
	admin off
	persist_config off
	storage file_system %[3]s/caddy
	servers {
		trusted_proxies static 127.0.0.0/8
		client_ip_headers X-Forwarded-For
	}
	%[1]s
	oauthconn {
		public_url %[2]s
		store file {
			path %[3]s/oauthconn
		}
		%[4]s
		connector demo {
			authorization_url %[5]s/authorize
			token_url %[5]s/token
			client_id demo-client
			client_secret demo-secret
			auth_style basic
			%[6]s
		}
	}
}

http://127.0.0.1:%[7]d {
	bind 127.0.0.1
	%[8]s
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo %[9]s {
			%[10]s
		}
	}
}
`

// startServer loads the test Caddyfile into this process's Caddy; Caddy
// stops when the test ends.
func startServer(t testing.TB, o testOptions) *testServer {
	t.Helper()
	s := &testServer{
		storeDir: t.TempDir(),
		as:       newFakeAS(t),
		up:       newFakeUpstream(t),
	}
	o.connector = strings.ReplaceAll(o.connector, "AS_URL", s.as.URL)
	o.connector = strings.ReplaceAll(o.connector, "UP_URL", s.up.URL)
	if o.upstream == "" {
		o.upstream = "UP_URL"
	}
	o.upstream = strings.ReplaceAll(o.upstream, "UP_URL", s.up.URL)
	publicURL := o.publicURL
	// The free port found may be taken (by a connection's local end, say)
	// before Caddy listens on it: then another one is tried.
	for try := 1; ; try++ {
		port := freePort(t)
		s.addr = fmt.Sprintf("127.0.0.1:%d", port)
		s.base = "http://" + s.addr
		if o.publicURL = publicURL; o.publicURL == "" {
			o.publicURL = s.base
		}
		s.src = fmt.Sprintf(testCaddyfile, o.global, o.publicURL, s.storeDir, o.app, s.as.URL, o.connector,
			port, o.site, o.upstream, o.proxy)
		cfg, err := adapt(s.src)
		if err != nil {
			t.Fatalf("adapting the test Caddyfile: %v\n%s", err, s.src)
		}
		err = caddy.Load(cfg, true)
		if err != nil && strings.Contains(err.Error(), "address already in use") && try < 5 {
			continue
		}
		if err != nil {
			t.Fatalf("loading the test Caddyfile: %v", err)
		}
		t.Cleanup(func() { caddy.Stop() })
		s.waitAnswers(t)
		return s
	}
}

// load replaces the running configuration with the Caddyfile src.
func (s *testServer) load(t *testing.T, src string) {
	t.Helper()
	cfg, err := adapt(src)
	if err != nil {
		t.Fatalf("adapting the test Caddyfile: %v\n%s", err, src)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the test Caddyfile: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
	s.waitAnswers(t)
}

// waitAnswers waits until the site answers: after a reload the previous
// configuration's server shuts down on the shared listener, and may reset
// a connection accepted meanwhile.
func (s *testServer) waitAnswers(t testing.TB) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	for range 100 {
		if resp, err := c.Get(s.base + "/"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the test site %s does not answer", s.base)
}

// caddyStop stops Caddy now, so that its logs are flushed and closed.
func caddyStop(t *testing.T) {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// client is a browser or an app: it keeps cookies and never follows
// redirects.
type client struct {
	c       *http.Client
	headers http.Header // sent with every request
}

func newClient() *client {
	jar, _ := cookiejar.New(nil)
	return &client{headers: http.Header{}, c: &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// from makes the client's requests look as if they came from address ip
// (through the trusted X-Forwarded-For).
func (c *client) from(ip string) *client {
	c.headers.Set("X-Forwarded-For", ip)
	return c
}

// do sends a request and returns the response with its body read.
func (c *client) do(t testing.TB, method, u string, hdr http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.headers {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// authorize starts a flow of connector demo and returns the state from the
// redirect to the provider.
func (s *testServer) authorize(t testing.TB, c *client) (state string, resp *http.Response) {
	t.Helper()
	resp, body := c.do(t, "GET", s.base+"/oauth/connectors/demo/authorize", nil, "")
	if resp.StatusCode != http.StatusFound {
		return "", resp
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("state") == "" {
		t.Fatalf("authorize redirected to %q: %s", resp.Header.Get("Location"), body)
	}
	return loc.Query().Get("state"), resp
}

// callback returns to the callback as the provider would, with a code.
func (s *testServer) callback(t testing.TB, c *client, state, code string) (*http.Response, string) {
	t.Helper()
	return c.do(t, "GET", s.base+"/oauth/callback?"+url.Values{"state": {state}, "code": {code}}.Encode(), nil, "")
}

// connect runs a whole authorization with client c and checks it succeeded.
func (s *testServer) connect(t testing.TB, c *client) {
	t.Helper()
	state, resp := s.authorize(t, c)
	if state == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	if resp, body := s.callback(t, c, state, "code-"+state[:8]); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
}

// rawRequest sends one HTTP/1.1 request as written (testhttp.Raw).
func rawRequest(t *testing.T, addr, raw string) *http.Response { return testhttp.Raw(t, addr, raw) }

// fakeAS is an authorization server's token endpoint: every code is good
// and gets a new access token, but the code or refresh token "refused"
// (invalid_grant) and the code "no-token" (an answer without a token).
// /revoke confirms every revocation.
type fakeAS struct {
	*httptest.Server
	n atomic.Int64
	// extra are fields added to every token response, if set.
	extra atomic.Pointer[map[string]any]

	mu    sync.Mutex
	forms []url.Values // every token request's form
}

// tokenRequests returns the forms of the token requests received.
func (as *fakeAS) tokenRequests() []url.Values {
	as.mu.Lock()
	defer as.mu.Unlock()
	return slices.Clone(as.forms)
}

func newFakeAS(t testing.TB) *fakeAS {
	as := &fakeAS{}
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/revoke" {
			w.WriteHeader(http.StatusOK) // RFC 7009: revoked, or no such token
			return
		}
		if r.URL.Path != "/token" || r.ParseForm() != nil {
			http.NotFound(w, r)
			return
		}
		as.mu.Lock()
		as.forms = append(as.forms, r.PostForm)
		as.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if _, secret, _ := r.BasicAuth(); secret == "wrong-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client","error_description":"echoed wrong-secret"}`)
			return
		}
		if r.PostForm.Get("subject_token") == "refused" || r.PostForm.Get("assertion") == "refused" {
			// RFC 8693 2.2.2: an invalid subject token is invalid_request.
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_request","error_description":"echoed refused"}`)
			return
		}
		if r.PostForm.Get("code") == "refused" || r.PostForm.Get("refresh_token") == "refused" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"echoed refused"}`)
			return
		}
		if r.PostForm.Get("code") == "no-token" {
			io.WriteString(w, `{"token_type":"Bearer"}`)
			return
		}
		n := as.n.Add(1)
		resp := map[string]any{
			"access_token": fmt.Sprintf("at-%d", n), "refresh_token": fmt.Sprintf("rt-%d", n),
			"token_type": "Bearer", "expires_in": 3600,
		}
		if extra := as.extra.Load(); extra != nil {
			maps.Copy(resp, *extra)
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(as.Close)
	return as
}

// seen is one request as the upstream received it.
type seen struct {
	Method, Path string
	Header       http.Header
	// Host is the Host header; URI the request target as sent.
	Host, URI string
}

// fakeUpstream is the API behind the proxy. It answers every request with
// 200 and permissive CORS headers of its own; /hints first sends a 103
// Early Hints with headers that the final response does not have;
// /trailers answers with an announced and an unannounced trailer;
// /first-token-refused answers 401 to the first access token issued;
// /teapot answers 418; /socket switches protocols (a WebSocket's
// handshake) and echoes what it then reads.
type fakeUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	up := &fakeUpstream{}
	up.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.mu.Lock()
		up.reqs = append(up.reqs, seen{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Host: r.Host, URI: r.RequestURI})
		up.mu.Unlock()
		h := w.Header()
		if r.URL.Path == "/hints" {
			h.Set("Link", "</style.css>; rel=preload")
			h.Set("X-Early", "only-in-103")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Del("X-Early")
		}
		if r.URL.Path == "/first-token-refused" && r.Header.Get("Authorization") == "Bearer at-1" {
			// The first token issued is refused, as after a revocation.
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"from the upstream"}`)
			return
		}
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		if r.URL.Path == "/socket" && r.Header.Get("Upgrade") == "websocket" {
			echoSocket(w)
			return
		}
		if r.URL.Path == "/trailers" {
			h.Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			h.Set("X-Checksum", "abc")
			h.Set(http.TrailerPrefix+"X-Late", "unannounced")
			return
		}
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Set("Access-Control-Expose-Headers", "X-Upstream")
		h.Set("X-Upstream", "yes")
		h.Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(up.Close)
	return up
}

// echoSocket answers a protocol switch and echoes the new protocol's
// bytes until the other side closes.
func echoSocket(w http.ResponseWriter) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	io.WriteString(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	rw.Flush()
	buf := make([]byte, 512)
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			conn.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// calls returns how many requests the upstream has received.
func (u *fakeUpstream) calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// last returns the upstream's last request.
func (u *fakeUpstream) last(t *testing.T) seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}
