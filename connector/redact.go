package connector

import (
	"fmt"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// configSecrets are the fields of a Config that print only as set or not:
// the client secret, the token request headers (which may carry an API
// key) and the signer (a key held elsewhere, whose state is its own).
var configSecrets = []string{"ClientSecret", "TokenHeaders", "ClientKeySigner"}

// Format implements fmt.Formatter: printed with fmt, a Config says whether
// its secrets are set, never what they are.
func (c Config) Format(f fmt.State, _ rune) { redact.Format(f, c, configSecrets...) }

// MarshalLogObject implements zapcore.ObjectMarshaler, as Format.
func (c Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, c, configSecrets...)
}

// Interface guards
var (
	_ fmt.Formatter           = Config{}
	_ zapcore.ObjectMarshaler = Config{}
)
