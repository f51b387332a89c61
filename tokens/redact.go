package tokens

import (
	"fmt"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// Tokens are secrets: printed with fmt (any verb but %p) or logged with zap, a
// Token or an Access says whether each is set, never what it is, so that a
// stray %v in an error or a log line leaks nothing.

// Format implements fmt.Formatter.
func (t Token) Format(f fmt.State, _ rune) { redact.Format(f, t, "AccessToken", "RefreshToken") }

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (t Token) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, t, "AccessToken", "RefreshToken")
}

// Format implements fmt.Formatter.
func (a Access) Format(f fmt.State, _ rune) { redact.Format(f, a, "Token", "Authorization") }

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (a Access) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, a, "Token", "Authorization")
}

// String shows the values: they are not secret.
func (md Metadata) String() string {
	if md.v == nil {
		return "map[]"
	}
	return fmt.Sprint(md.v.m)
}

// Interface guards
var (
	_ fmt.Formatter           = Token{}
	_ fmt.Formatter           = Access{}
	_ zapcore.ObjectMarshaler = Token{}
	_ zapcore.ObjectMarshaler = Access{}
	_ fmt.Stringer            = Metadata{}
)
