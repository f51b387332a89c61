package caddymodule

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// BenchmarkProxyOverhead compares, in one process on the same site,
// oauthconn_proxy with a connected connection against plain reverse_proxy
// with a static Authorization header of the same length, both in front of
// the same small upstream, for a GET and for a POST of 64 KiB (which
// oauthconn_proxy keeps a copy of, to send again after a 401). The two
// differ only by what oauthconn adds per request, so their ns/op, B/op and
// allocs/op side by side are its cost (the client's and the upstream's work
// included in both).
//
//	go test ./caddymodule -run '^$' -bench ProxyOverhead -benchmem -cpu 1
func BenchmarkProxyOverhead(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	host := strings.TrimPrefix(up.URL, "http://")
	s := startServer(b, testOptions{
		upstream: up.URL,
		site:     staticSite(host),
	})
	app := newClient()
	s.connect(b, app)

	body := strings.Repeat("x", 64<<10)
	for _, req := range []struct{ name, body string }{{"GET", ""}, {"POST_64KiB", body}} {
		for _, site := range []struct{ name, path string }{
			{"oauthconn_proxy", "/demo/items"},
			{"reverse_proxy", "/static/items"},
		} {
			b.Run(req.name+"/"+site.name, func(b *testing.B) {
				c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
				defer c.CloseIdleConnections()
				u := s.base + site.path
				if err := send(c, u, req.body); err != nil {
					b.Fatal(err)
				}
				b.SetParallelism(16)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := send(c, u, req.body); err != nil {
							b.Error(err) // not Fatal: this is not the benchmark's goroutine
							return
						}
					}
				})
			})
		}
	}
}

// staticSite is the test site's plain reverse_proxy to upstream (host and
// port) under /static/, with a static Authorization header as long as the
// connection's token ("at-1"): what oauthconn_proxy is compared with.
func staticSite(upstream string) string {
	return fmt.Sprintf(`handle_path /static/* {
		reverse_proxy %[1]s {
			header_up Host %[1]s
			header_up Authorization "Bearer at-1"
		}
	}`, upstream)
}

// send sends a GET, or a POST of body if there is one, and reads the whole
// answer, which must be a 200.
func send(c *http.Client, u, body string) error {
	var resp *http.Response
	var err error
	if body == "" {
		resp, err = c.Get(u)
	} else {
		resp, err = c.Post(u, "application/octet-stream", strings.NewReader(body))
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", u, resp.StatusCode)
	}
	return nil
}

// BenchmarkHandlerOverhead measures what oauthconn_proxy's handler adds to
// Caddy's reverse proxy, without the network: both handlers of
// BenchmarkProxyOverhead's site (oauthconn_proxy with a connected
// connection, reverse_proxy with a static Authorization header) are called
// directly, their transport answering in memory, for a GET and for a POST
// of 64 KiB that the transport reads whole. Only the handlers, Caddy's
// request preparation and the test's request run, so the difference in
// allocations between the two lines of a pair is exactly what oauthconn
// adds per request; on a shared machine the timings bound the difference
// rather than measure it.
//
//	go test ./caddymodule -run '^$' -bench HandlerOverhead -benchmem -cpu 1 -count 5
func BenchmarkHandlerOverhead(b *testing.B) {
	s := startServer(b, testOptions{
		upstream: "http://127.0.0.1:9",
		site:     staticSite("127.0.0.1:9"),
	})
	s.connect(b, newClient())
	srv, oauth, static := siteHandlers(b)
	oauth.ReverseProxy.Transport = memoryUpstream{}
	static.Transport = memoryUpstream{}
	handlers := []struct {
		name string
		h    caddyhttp.MiddlewareHandler
	}{{"oauthconn_proxy", oauth}, {"reverse_proxy", static}}

	body := bytes.Repeat([]byte("x"), 64<<10)
	for _, req := range []struct {
		name, method string
		body         []byte
	}{{"GET", http.MethodGet, nil}, {"POST_64KiB", http.MethodPost, body}} {
		for _, h := range handlers {
			b.Run(req.name+"/"+h.name, func(b *testing.B) {
				w := &discardWriter{}
				serve := func() {
					r := httptest.NewRequest(req.method, "/items", bytes.NewReader(req.body))
					repl := caddy.NewReplacer()
					r = caddyhttp.PrepareRequest(r, repl, w, srv)
					w.reset()
					if err := h.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil || w.status != http.StatusOK {
						b.Fatalf("%s: %d, %v", h.name, w.status, err)
					}
				}
				serve()
				b.ReportAllocs()
				for b.Loop() {
					serve()
				}
			})
		}
	}
}

// siteHandlers returns the running test site's server and its two
// proxies: the first oauthconn_proxy and the first reverse_proxy.
func siteHandlers(b *testing.B) (*caddyhttp.Server, *ProxyHandler, *reverseproxy.Handler) {
	app, err := caddy.ActiveContext().AppIfConfigured("http")
	if err != nil {
		b.Fatal(err)
	}
	var oauth *ProxyHandler
	var static *reverseproxy.Handler
	var walk func(caddyhttp.RouteList)
	walk = func(routes caddyhttp.RouteList) {
		for _, rt := range routes {
			for _, h := range rt.Handlers {
				switch h := h.(type) {
				case *ProxyHandler:
					oauth = cmp.Or(oauth, h)
				case *reverseproxy.Handler:
					static = cmp.Or(static, h)
				case *caddyhttp.Subroute:
					walk(h.Routes)
				}
			}
		}
	}
	for _, srv := range app.(*caddyhttp.App).Servers {
		walk(srv.Routes)
		if oauth != nil && static != nil {
			return srv, oauth, static
		}
	}
	b.Fatal("the test site has no oauthconn_proxy and reverse_proxy")
	return nil, nil, nil
}

// memoryUpstream answers every request with a small JSON 200, reading the
// request's body first, as an upstream would.
type memoryUpstream struct{}

func (memoryUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
	const answer = `{"ok":true}`
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Content-Length": {fmt.Sprint(len(answer))}},
		Body:          io.NopCloser(strings.NewReader(answer)),
		ContentLength: int64(len(answer)),
		Request:       r,
	}, nil
}

// discardWriter is a response writer that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) reset() {
	clear(w.h)
	w.status = 0
}

func (w *discardWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}
