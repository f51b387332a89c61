package flow

import (
	"fmt"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// A flow's state, binding and verifier are secrets: printed with fmt or
// logged with zap, a Flow or a Started says whether each is set, never
// what it is.

// Format implements fmt.Formatter.
func (fl Flow) Format(f fmt.State, _ rune) { redact.Format(f, fl, flowSecrets...) }

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (fl Flow) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, fl, flowSecrets...)
}

// Format implements fmt.Formatter.
func (s Started) Format(f fmt.State, _ rune) { redact.Format(f, s, startedSecrets...) }

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (s Started) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redact.Object(enc, s, startedSecrets...)
}

var (
	flowSecrets    = []string{"Verifier"}
	startedSecrets = []string{"State", "Binding", "Verifier"}
)

// Interface guards
var (
	_ fmt.Formatter           = Flow{}
	_ fmt.Formatter           = Started{}
	_ zapcore.ObjectMarshaler = Flow{}
	_ zapcore.ObjectMarshaler = Started{}
)
