package caddymodule

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestDisconnectSaysWhetherRevoked: DELETE answers 200 and says whether
// the provider confirmed the revocation, and why not.
func TestDisconnectSaysWhetherRevoked(t *testing.T) {
	for _, tt := range []struct {
		revocationURL string
		revoked       bool
		why           string
	}{
		{"", false, "no_revocation_url"},
		{"AS_URL/revoke", true, "revoked"},
		{"AS_URL/refuses", false, "provider_error"},
		{"http://127.0.0.1:1/revoke", false, "unreachable"},
	} {
		o := testOptions{}
		if tt.revocationURL != "" {
			o.connector = "revocation_url " + tt.revocationURL
		}
		s := startServer(t, o)
		s.connect(t, newClient())
		resp, body := newClient().do(t, "DELETE", s.base+"/oauth/connectors/demo", nil, "")
		var got struct {
			Disconnected, Revoked bool
			Revocation            string
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil ||
			!got.Disconnected || got.Revoked != tt.revoked || got.Revocation != tt.why {
			t.Errorf("revocation_url %q: %d %s", tt.revocationURL, resp.StatusCode, body)
		}
		caddyStop(t)
	}
}
