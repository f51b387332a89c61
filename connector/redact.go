package connector

import (
	"fmt"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// Format implements fmt.Formatter: printed with any verb, a Config says
// whether its client secret and token request headers (which may carry
// an API key) are set, never what they are.
func (c Config) Format(f fmt.State, _ rune) { redact.Format(f, c, "ClientSecret", "TokenHeaders") }

// Interface guards
var _ fmt.Formatter = Config{}
