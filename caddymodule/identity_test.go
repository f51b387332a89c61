package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// TestUserPlaceholder: with user naming a header copied by forward_auth,
// the flow records that user, and only the same user may finish it; the
// app-wide user applies to connectors without their own.
func TestUserPlaceholder(t *testing.T) {
	for _, o := range []testOptions{
		{connector: "user {http.request.header.Remote-User}"},
		{app: "user {http.request.header.Remote-User}"},
	} {
		s := startServer(t, o)
		as := func(name string) http.Header { return http.Header{"Remote-User": {name}} }
		alice := newClient()
		alice.headers = as("alice")
		state, resp := s.authorize(t, alice)
		if state == "" {
			t.Fatalf("authorize: %d", resp.StatusCode)
		}
		// Bob holds alice's browser's cookie and the state.
		bob := newClient()
		bob.c.Jar = alice.c.Jar
		bob.headers = as("bob")
		if resp, body := s.callback(t, bob, state, "c"); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another user") {
			t.Fatalf("%+v: another user finishing: %d %s", o, resp.StatusCode, body)
		}
		state, _ = s.authorize(t, alice)
		if resp, body := s.callback(t, alice, state, "c"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%+v: the same user: %d %s", o, resp.StatusCode, body)
		}
		if _, st := newClient().do(t, "GET", s.base+"/oauth/connectors", nil, ""); !strings.Contains(st, `"connected_by":"alice"`) {
			t.Fatalf("%+v: status %s", o, st)
		}
		caddyStop(t)
	}
}
