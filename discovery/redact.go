package discovery

import (
	"fmt"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/redact"
)

// Format implements fmt.Formatter: printed with any verb, a registered
// Client says whether its secret and registration access token are set,
// never what they are.
func (c Client) Format(f fmt.State, _ rune) {
	redact.Format(f, c, "Secret", "RegistrationAccessToken")
}

// Interface guards
var _ fmt.Formatter = Client{}
