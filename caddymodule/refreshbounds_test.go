package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// The refresh bounds given in JSON are checked at provisioning: a negative
// one is refused with the option's name.
func TestRefreshBoundsJSON(t *testing.T) {
	for _, opt := range []string{"max_concurrent_refreshes", "max_waiting"} {
		t.Run(opt, func(t *testing.T) {
			src := `{"apps": {"oauthconn": {"public_url": "http://localhost:8080", "connectors": {"demo": {
				"authorization_url": "https://as.example.com/authorize", "token_url": "https://as.example.com/token",
				"client_id": "demo", "` + opt + `": -1}}}}}`
			var cfg caddy.Config
			if err := json.Unmarshal([]byte(src), &cfg); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), "connector demo: max_concurrent_refreshes and max_waiting must not be negative") {
				t.Fatalf("err = %v; want the negative bound refused", err)
			}
		})
	}
	src := `{"apps": {"oauthconn": {"public_url": "http://localhost:8080", "connectors": {"demo": {
		"authorization_url": "https://as.example.com/authorize", "token_url": "https://as.example.com/token",
		"client_id": "demo", "max_concurrent_refreshes": 4, "max_waiting": 100}}}}}`
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("valid bounds: %v", err)
	}
}

// A request shed because too many wait for the connector's tokens is
// answered 503 overloaded with Retry-After.
func TestOverloadedAnswer(t *testing.T) {
	h := &ProxyHandler{conn: &Connector{name: "demo"}, logger: zap.NewNop()}
	w := httptest.NewRecorder()
	err := h.tokenError(w, httptest.NewRequest(http.MethodGet, "/", nil),
		fmt.Errorf("getting token: %w", &tokens.UnavailableError{RetryAfter: 2 * time.Second, Err: tokens.ErrOverloaded}))
	if err != nil {
		t.Fatal(err)
	}
	var body apiError
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" || body.Error != "overloaded" || body.Connector != "demo" {
		t.Fatalf("answered %d Retry-After %q %+v; want 503, 2, overloaded", w.Code, w.Header().Get("Retry-After"), body)
	}
}
