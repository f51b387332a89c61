package redact_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// TestNoSecretPrinted: every type that holds a secret, printed with any
// verb, directly, by pointer or inside another value, shows none of its
// secrets, says which are set, and shows its other fields.
func TestNoSecretPrinted(t *testing.T) {
	tok := tokens.Token{AccessToken: "secret-at", RefreshToken: "secret-rt", TokenType: "Bearer", Generation: "g1"}
	values := []struct {
		v    any
		want string // a field that is not secret, as it must show
	}{
		{tok, "TokenType:Bearer"},
		{tokens.AccessOf(tok), "Metadata:map[]"},
		{flow.Flow{Connector: "demo", Verifier: "secret-verifier", CreatedAt: time.Unix(0, 0).UTC()}, "Connector:demo"},
		{flow.Started{State: "secret-state", Binding: "secret-binding", Verifier: "secret-v", ID: "abc"}, "ID:abc"},
		{connector.Config{Name: "demo", ClientID: "app", ClientSecret: "secret-cs", TokenHeaders: map[string]string{"X-Api-Key": "secret-key"}}, "ClientID:app"},
		{discovery.Client{ID: "app", Secret: "secret-s", RegistrationAccessToken: "secret-rat"}, "ID:app"},
	}
	for _, c := range values {
		name := fmt.Sprintf("%T", c.v)
		ptr := reflect.New(reflect.TypeOf(c.v))
		ptr.Elem().Set(reflect.ValueOf(c.v))
		for _, v := range []any{c.v, ptr.Interface(), struct{ In []any }{[]any{c.v}}} {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
				if out := fmt.Sprintf(verb, v); strings.Contains(out, "secret") || strings.Contains(out, fmt.Sprintf("%x", "secret")) {
					t.Errorf("%s with %s: %s", name, verb, out)
				}
			}
		}
		out := fmt.Sprint(c.v)
		if !strings.Contains(out, c.want) || !strings.Contains(out, "<redacted>") {
			t.Errorf("%s prints as %s; want %s and <redacted>", name, out, c.want)
		}
	}
	if out := fmt.Sprint(flow.Started{ID: "abc"}); !strings.Contains(out, "State:<empty>") {
		t.Errorf("a Started without state prints as %s", out)
	}
}
