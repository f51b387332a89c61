package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

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
