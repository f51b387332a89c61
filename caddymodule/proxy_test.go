package caddymodule

import (
	"net/http"
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
