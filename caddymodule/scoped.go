package caddymodule

import (
	"context"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// provisionScopes expands the proxy's scopes (placeholders such as
// {env.SHAREPOINT_HOST} included) and checks them.
func (h *ProxyHandler) provisionScopes() error {
	repl := caddy.NewReplacer()
	h.scopes = nil
	for _, s := range h.Scopes {
		s = repl.ReplaceKnown(s, "")
		if s == "" {
			return fmt.Errorf("oauthconn_proxy %s: a scope is empty (a placeholder expanded to nothing?)", h.Connector)
		}
		if strings.ContainsAny(s, " \t\r\n\"\\") {
			return fmt.Errorf("oauthconn_proxy %s: scope %q contains a space, quote or backslash", h.Connector, s)
		}
		h.scopes = append(h.scopes, s)
	}
	return nil
}

// token returns the access token to attach: the connection's own, or, with
// scopes set, one for those scopes obtained with its refresh token.
func (h *ProxyHandler) token(ctx context.Context, key tokens.Key, conn *connector.Connector) (tokens.Access, error) {
	if len(h.scopes) == 0 {
		return h.app.keeper.Access(ctx, key, conn, h.conn.policy)
	}
	tok, err := h.app.keeper.TokenFor(ctx, key, conn, h.conn.policy, h.scopes)
	return tokens.AccessOf(tok), err
}

// rejected is Keeper.Rejected for the token token returned.
func (h *ProxyHandler) rejected(ctx context.Context, key tokens.Key, conn *connector.Connector, rejected string) (tokens.Token, error) {
	if len(h.scopes) == 0 {
		return h.app.keeper.Rejected(ctx, key, conn, h.conn.policy, rejected)
	}
	return h.app.keeper.RejectedFor(ctx, key, conn, h.conn.policy, h.scopes, rejected)
}
