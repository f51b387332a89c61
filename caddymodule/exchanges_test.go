package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// TestExchangeRecycling: an exchange goes back to the pool emptied, so that
// nothing of one request (its token, its writers, its request) reaches the
// next; a protocol switch's exchange is never given back, as the reverse
// proxy's tunnel may still write through its writers.
func TestExchangeRecycling(t *testing.T) {
	ws := httptest.NewRequest(http.MethodGet, "/socket", nil)
	ws.Header.Set("Connection", "Upgrade")
	ws.Header.Set("Upgrade", "websocket")
	for _, c := range []struct {
		name     string
		r        *http.Request
		recycled bool
	}{
		{"GET", httptest.NewRequest(http.MethodGet, "/items", nil), true},
		{"WebSocket", ws, false},
		{"extended CONNECT", httptest.NewRequest(http.MethodConnect, "/socket", nil), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := newExchange(&ProxyHandler{}, c.r)
			x.access = tokens.AccessOf(tokens.Token{AccessToken: "at"})
			x.cors = corsWriter{w: httptest.NewRecorder(), origin: "https://app.example"}
			x.first.begin(&x.cors)
			x.app.take(c.r)
			x.recycle()
			if emptied := reflect.ValueOf(*x).IsZero(); emptied != c.recycled {
				t.Fatalf("recycled (emptied) = %v, want %v", emptied, c.recycled)
			}
		})
	}
}

// TestConcurrentExchanges: requests of every shape at once (plain, with a
// body, a 103 Early Hints before the answer, trailers, an answer taken over
// by a handle_response route, a 401 replayed with a refreshed token,
// WebSocket tunnels) each get their own answer, and the upstream sees each
// with the connection's token. Under -race (scripts/test runs every test
// so) it also fails if a recycled exchange were still used by the request
// it served, or handed to another while in use.
func TestConcurrentExchanges(t *testing.T) {
	s := startServer(t, testOptions{proxy: "@teapot status 418\n\t\t\thandle_response @teapot {\n\t\t\t\trespond \"handled\" 200\n\t\t\t}"})
	s.connect(t, newClient())
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 24 {
				id := fmt.Sprintf("%d-%d", g, i)
				var err error
				switch i % 6 {
				case 0:
					err = expect(c, "GET", s.base+"/demo/items/"+id, "", `{"path":"/items/`+id+`"}`)
				case 1:
					path := "/items/" + id
					if g == 0 && i == 1 {
						path = "/first-token-refused" // replayed once, with at-2
					}
					err = expect(c, "POST", s.base+"/demo"+path, "body of "+id, `{"path":"`+path+`"}`)
				case 2:
					err = expect(c, "GET", s.base+"/demo/hints", "", `{"path":"/hints"}`)
				case 3:
					err = expect(c, "GET", s.base+"/demo/trailers", "", "body")
				case 4:
					err = expect(c, "GET", s.base+"/demo/teapot", "", "handled")
				case 5:
					err = tunnel(strings.TrimPrefix(s.base, "http://"), id)
				}
				if err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	s.up.mu.Lock()
	defer s.up.mu.Unlock()
	if len(s.up.reqs) != 8*24+1 {
		t.Errorf("the upstream got %d requests, want %d (one replay)", len(s.up.reqs), 8*24+1)
	}
	for _, r := range s.up.reqs {
		if a := r.Header.Get("Authorization"); a != "Bearer at-1" && a != "Bearer at-2" {
			t.Errorf("%s %s carried Authorization %q", r.Method, r.Path, a)
		}
	}
}

// expect sends a request and checks that it is answered 200 with want in
// the body (and, for /trailers, the upstream's trailer).
func expect(c *http.Client, method, u, body, want string) error {
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), want) {
		return fmt.Errorf("%s %s: %d %s, want 200 with %s", method, u, resp.StatusCode, got, want)
	}
	if strings.HasSuffix(u, "/trailers") && resp.Trailer.Get("X-Checksum") != "abc" {
		return fmt.Errorf("trailers %v", resp.Trailer)
	}
	return nil
}

// tunnel opens a WebSocket through the proxy at addr and checks that what
// it sends comes back.
func tunnel(addr, msg string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /demo/socket HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake answered %d", resp.StatusCode)
	}
	if _, err := io.WriteString(conn, msg); err != nil {
		return err
	}
	echo := make([]byte, len(msg))
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != msg {
		return fmt.Errorf("echo %q, %v; want %q", echo, err, msg)
	}
	return nil
}
