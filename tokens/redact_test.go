package tokens

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestSecretsNeverFormatted: a Token or an Access printed with any fmt verb,
// directly, by pointer or inside another value, or logged with zap, shows
// neither its access token nor its refresh token, and still says which
// are set.
func TestSecretsNeverFormatted(t *testing.T) {
	const at, rt = "at-secret-value", "rt-secret-value"
	tok := Token{AccessToken: at, RefreshToken: rt, TokenType: "Bearer", Scope: "read",
		Expiry: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), Generation: "g1",
		Metadata: NewMetadata(map[string]string{"instance_url": "https://x.example"})}
	acc := AccessOf(tok)
	values := map[string]any{
		"Token": tok, "*Token": &tok, "Access": acc, "*Access": &acc,
		"in a struct": struct {
			T Token
			A []Access
		}{tok, []Access{acc}},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "secret") || strings.Contains(out, fmt.Sprintf("%x", at)) {
				t.Errorf("%s with %s: %s", name, verb, out)
			}
		}
	}
	if got := fmt.Sprint(tok); !strings.Contains(got, "tokens.Token{AccessToken:<redacted> RefreshToken:<redacted> TokenType:Bearer") ||
		!strings.Contains(got, "Expiry:2026-11-30 12:00:00 +0000 UTC") || !strings.Contains(got, "Metadata:map[instance_url:https://x.example]") {
		t.Errorf("Token prints as %s", got)
	}
	if got := fmt.Sprint(Token{AccessToken: at}); !strings.Contains(got, "RefreshToken:<empty>") {
		t.Errorf("a Token without refresh token prints as %s", got)
	}

	var buf bytes.Buffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel)
	zap.New(core).Info("tokens", zap.Any("token", tok), zap.Object("access", acc), zap.Any("access_ptr", &acc))
	if out := buf.String(); strings.Contains(out, "secret") || !strings.Contains(out, `"AccessToken":"<redacted>"`) {
		t.Errorf("logged: %s", out)
	}
}
