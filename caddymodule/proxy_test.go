package caddymodule

import (
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"testing"
)

// TestConnectionCannotStripBearer: an app naming Authorization (or a header
// set by header_up) in Connection cannot make the proxy drop it after
// attaching it; the app's own hop-by-hop headers are still dropped.
func TestConnectionCannotStripBearer(t *testing.T) {
	s := startServer(t, testOptions{proxy: "header_up X-Api-Version 3"})
	s.connect(t, newClient())
	for _, conn := range []string{"Authorization, X-Hop", "keep-alive, authorization, X-Api-Version, X-Hop", "AUTHORIZATION,x-hop"} {
		resp := rawRequest(t, s.addr, "GET /demo/items HTTP/1.1\r\nHost: "+s.addr+"\r\nConnection: "+conn+
			"\r\nAuthorization: Basic YTpi\r\nX-Hop: app\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Connection: %s: %d", conn, resp.StatusCode)
		}
		got := s.up.last(t).Header
		if got.Get("Authorization") != "Bearer at-1" || got.Get("X-Api-Version") != "3" {
			t.Errorf("Connection: %s: upstream saw Authorization %q, X-Api-Version %q", conn, got.Get("Authorization"), got.Get("X-Api-Version"))
		}
		if got.Get("X-Hop") != "" || got.Get("Connection") != "" {
			t.Errorf("Connection: %s: hop-by-hop headers reached the upstream: %v", conn, got)
		}
	}
}

// TestEarlyHintsHeadersStayInTheirResponse: the headers of an upstream's
// 103 Early Hints reach the app in the 103, not in the final response.
func TestEarlyHintsHeadersStayInTheirResponse(t *testing.T) {
	s := startServer(t, testOptions{})
	s.connect(t, newClient())
	var hints []http.Header
	req, _ := http.NewRequest("GET", s.base+"/demo/hints", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, http.Header(h))
			return nil
		},
	}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(hints) != 1 || hints[0].Get("X-Early") != "only-in-103" {
		t.Fatalf("got %d with hints %v", resp.StatusCode, hints)
	}
	for _, k := range []string{"X-Early", "Link"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("the 103's %s reached the final response: %q", k, v)
		}
	}
	if resp.Header.Get("X-Upstream") != "yes" {
		t.Errorf("final response headers: %v", resp.Header)
	}
}

// TestProxyPassesTrailers: the upstream's response trailers, announced or
// not, reach the app through the first attempt's writer.
func TestProxyPassesTrailers(t *testing.T) {
	s := startServer(t, testOptions{})
	s.connect(t, newClient())
	resp, body := newClient().do(t, "GET", s.base+"/demo/trailers", nil, "")
	if resp.StatusCode != http.StatusOK || body != "body" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("X-Late") != "unannounced" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
}
