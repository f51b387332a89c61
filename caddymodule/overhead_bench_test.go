package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkProxyOverhead compares, in one process on the same site,
// oauthconn_proxy with a connected connection against plain reverse_proxy
// with a static Authorization header of the same length, both in front of
// the same small upstream, for a GET and for a POST of 64 KiB (which
// oauthconn_proxy keeps a copy of, to send again after a 401). The two differ only by what oauthconn adds per
// request, so their ns/op, B/op and allocs/op side by side are its cost
// (the client's and the upstream's work included in both).
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
		site: fmt.Sprintf(`handle_path /static/* {
			reverse_proxy %s {
				header_up Host %s
				header_up Authorization "Bearer at-1"
			}
		}`, host, host),
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
