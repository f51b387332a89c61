package flow

import (
	"fmt"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// A flow's state, binding and verifier are secrets: printed with fmt (any
// verb), a Flow or a Started says whether each is set, never what it is.

// Format implements fmt.Formatter.
func (fl Flow) Format(f fmt.State, _ rune) { redact.Format(f, fl, "Verifier") }

// Format implements fmt.Formatter.
func (s Started) Format(f fmt.State, _ rune) { redact.Format(f, s, "State", "Binding", "Verifier") }

// Interface guards
var (
	_ fmt.Formatter = Flow{}
	_ fmt.Formatter = Started{}
)
