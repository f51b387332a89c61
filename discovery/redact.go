package discovery

import (
	"fmt"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// clientSecrets are the fields of a registered Client that print only as
// set or not.
var clientSecrets = []string{"Secret", "RegistrationAccessToken"}

// Format implements fmt.Formatter: printed with fmt, a registered Client
// says whether its secret and registration access token are set, never
// what they are.
func (c Client) Format(f fmt.State, _ rune) { redact.Format(f, c, clientSecrets...) }

// MarshalLogObject implements zapcore.ObjectMarshaler, as Format.
func (c Client) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, c, clientSecrets...)
}

// Interface guards
var (
	_ fmt.Formatter           = Client{}
	_ zapcore.ObjectMarshaler = Client{}
)
