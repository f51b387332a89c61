package redact_test

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// TestNoSecretPrinted: every type that holds a secret, printed with any
// verb but %p (which fmt answers without the type's methods), directly, by
// pointer or inside another value, or logged with zap, shows none of its
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
		{connector.Config{Name: "demo", ClientID: "app", ClientSecret: "secret-cs", TokenHeaders: map[string]string{"X-Api-Key": "secret-key"}, ClientKeySigner: secretSigner{"secret-key-material"}}, "ClientID:app"},
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
		var logged bytes.Buffer
		core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel)
		zap.New(core).Info("value", zap.Any("v", c.v), zap.Any("ptr", ptr.Interface()))
		if strings.Contains(logged.String(), "secret") || !strings.Contains(logged.String(), "<redacted>") {
			t.Errorf("%s logged: %s", name, logged.String())
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

// secretSigner stands for a key kept elsewhere: its state is not the
// Config's to print.
type secretSigner struct{ key string }

func (secretSigner) Public(context.Context) (crypto.PublicKey, error) { return nil, nil }
func (secretSigner) Sign(context.Context, crypto.PublicKey, string, []byte) ([]byte, error) {
	return nil, nil
}
