package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// How oauthconn_proxy gets its token for the grants other than the
// authorization code: the application's own token (client_credentials),
// or the app's user's token exchanged for one to the upstream
// (on_behalf_of, token_exchange). None of them has connections to
// authorize, and none is retried after an upstream 401.

// provisionGrant checks the grant options and sets them in cfg. It runs
// before the provider's preset, which picks default scopes by grant.
func (c *Connector) provisionGrant(cfg *connector.Config, exp func(string) string) error {
	g, err := connector.ParseGrant(exp(c.Grant))
	if err != nil {
		return fmt.Errorf("connector %s: %w", c.name, err)
	}
	c.grant, cfg.Grant = g, g
	if g == connector.GrantClientCredentials && c.Subject != "" {
		return fmt.Errorf("connector %s: grant client_credentials gets the application's own token, for no user: remove subject", c.name)
	}
	if g != connector.GrantTokenExchange && (c.Audience != "" || c.ExchangeResource != "" || c.RequestedTokenType != "") {
		return fmt.Errorf("connector %s: audience, exchange_resource and requested_token_type are options of grant token_exchange", c.name)
	}
	if !g.Authorizes() && c.Resource != "" {
		return fmt.Errorf("connector %s: grant %s does not work with a resource connector (resource); give token_url instead", c.name, g)
	}
	if c.ExchangeCacheSize < 0 {
		return fmt.Errorf("connector %s: exchange_cache_size must not be negative", c.name)
	}
	if c.ExchangeCacheSize != 0 && !g.Exchanges() {
		return fmt.Errorf("connector %s: exchange_cache_size is an option of grants on_behalf_of and token_exchange", c.name)
	}
	cfg.Audience, cfg.ExchangeResource, cfg.RequestedTokenType = exp(c.Audience), exp(c.ExchangeResource), exp(c.RequestedTokenType)
	switch {
	case g == connector.GrantClientCredentials:
		c.appToken = tokens.NewAppToken(nil)
	case g.Exchanges():
		c.exchanges = tokens.NewExchanges(c.ExchangeCacheSize, 0, nil)
	}
	return nil
}

// authorizes reports whether the connector's connections are authorized by
// a person (the authorization code grant).
func (c *Connector) authorizes() bool { return c.grant.Authorizes() }

// grantError is the JSON answer of a request whose grant gave no token.
type grantError struct {
	Error     string `json:"error"`
	Message   string `json:"message,omitempty"`
	Connector string `json:"connector"`
	// ProviderError is the token endpoint's RFC 6749 error code, such as
	// invalid_client or invalid_grant: what the operator looks up.
	ProviderError string `json:"provider_error,omitempty"`
}

// serveGrant proxies r with a token of the connector's grant, for every
// grant but the authorization code's.
func (h *ProxyHandler) serveGrant(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c := h.conn
	var tok tokens.Token
	var err error
	if c.grant == connector.GrantClientCredentials {
		tok, err = c.appToken.Token(r.Context(), c.conn, c.policy)
	} else {
		tok, err = h.exchange(w, r)
		if tok.AccessToken == "" && err == nil {
			return nil // answered
		}
	}
	if err != nil {
		return h.grantError(w, r, err)
	}
	first := &firstAttempt{decide: func(status int) bool {
		if c.appToken != nil && status == http.StatusUnauthorized {
			// The upstream refused the application's token (revoked,
			// or its permissions changed): the next request gets a
			// new one, at most once per cooldown.
			c.appToken.Rejected(tok.AccessToken, c.policy.Cooldown)
		}
		return false
	}}
	first.begin(w)
	var app appRequest
	defer app.restore()
	access := tokens.AccessOf(tok)
	return h.ReverseProxy.ServeHTTP(first, h.upstreamRequest(r, &access, &h.static, nil, &app), next)
}

// exchange returns the token exchanged for the user's token that r carries.
// A zero token with a nil error means the request was answered.
func (h *ProxyHandler) exchange(w http.ResponseWriter, r *http.Request) (tokens.Token, error) {
	c := h.conn
	incoming, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_request"`)
		return tokens.Token{}, writeJSON(w, http.StatusUnauthorized, grantError{Error: "user_token_required", Connector: c.name,
			Message: "this connector exchanges the app's user's access token: send it as Authorization: Bearer <token>"})
	}
	var key tokens.Key
	if c.grant == connector.GrantOnBehalfOf && c.Subject != "" {
		// The refresh token Entra returns is kept for the user the
		// subject names, and for nobody else.
		subject, err := c.subject(r)
		if err != nil {
			return tokens.Token{}, writeSubjectError(w, c.name, err)
		}
		key = tokens.Key{Connector: c.name, Subject: subject}
	}
	user := h.app.userOf(r, c)
	return c.exchanges.Token(r.Context(), incoming, c.policy, func(ctx context.Context) (*oauth2.Token, error) {
		var ot *oauth2.Token
		var err error
		if c.grant == connector.GrantOnBehalfOf {
			ot, err = c.conn.OnBehalfOf(ctx, incoming)
		} else {
			ot, err = c.conn.TokenExchange(ctx, incoming)
		}
		if err == nil && key.Subject != "" && ot.RefreshToken != "" {
			if _, serr := h.app.keeper.Renew(ctx, key, ot, user); serr != nil {
				h.logger.Warn("keeping the user's on-behalf-of refresh token", zap.String("connector", c.name), zap.Error(serr))
			}
		}
		return ot, err
	})
}

// bearer returns the access token of r's Authorization header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// grantError answers a request for which the grant gave no token. Only the
// provider's error code is shown, never a token or a secret.
func (h *ProxyHandler) grantError(w http.ResponseWriter, r *http.Request, err error) error {
	name := h.conn.name
	code := tokens.ProviderCode(err)
	var ue *tokens.UnavailableError
	switch {
	case errors.Is(err, connector.ErrSubjectTokenRejected):
		h.logger.Info("the provider refused to exchange the app's user token", zap.String("connector", name), zap.Error(err))
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		return writeJSON(w, http.StatusUnauthorized, grantError{Error: "subject_token_rejected", Connector: name, ProviderError: code,
			Message: "the provider refused to exchange the token sent in Authorization; get a new one for the user"})
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return caddyhttp.Error(499, err)
	case errors.As(err, &ue):
		h.logger.Warn("no usable token", zap.String("connector", name), zap.Error(err))
		msg := "no usable access token right now; retry later"
		if code != "" {
			msg = "the provider's token endpoint refused: " + code
		}
		return writeGrantUnavailable(w, ue.RetryAfter, grantError{Error: "token_unavailable", Connector: name, ProviderError: code, Message: msg})
	default:
		h.logger.Warn("no usable token", zap.String("connector", name), zap.Error(err))
		retry := connector.RetryAfterOf(err)
		if retry == 0 {
			retry = 5 * time.Second
		}
		msg := "no usable access token right now; retry later"
		if code != "" {
			msg = "the provider's token endpoint refused: " + code
		}
		return writeGrantUnavailable(w, retry, grantError{Error: "token_unavailable", Connector: name, ProviderError: code, Message: msg})
	}
}

// writeGrantUnavailable answers 503 with Retry-After.
func writeGrantUnavailable(w http.ResponseWriter, retryAfter time.Duration, body grantError) error {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retryAfter.Seconds()))))
	return writeJSON(w, http.StatusServiceUnavailable, body)
}

// writeNoConnections answers a connect or disconnect route of a connector
// whose grant has no connections to authorize.
func writeNoConnections(w http.ResponseWriter, c *Connector) {
	writeJSON(w, http.StatusConflict, grantError{Error: "no_connections", Connector: c.name,
		Message: fmt.Sprintf("connector %s has grant %s: it has no connections to authorize or disconnect", c.name, c.grant)})
}

// grantStatus describes a connector of a grant without connections: an
// "application" (client_credentials) with the state of its token
// (token_held, no_token, or error with the provider's code in
// last_error), or an "exchange" (on_behalf_of, token_exchange).
func grantStatus(st connectorStatus, c *Connector) connectorStatus {
	st.AuthorizeURL, st.Grant = "", string(c.grant)
	if c.appToken == nil {
		st.Status = "exchange"
		return st
	}
	s := c.appToken.State()
	st.Status, st.Token = "application", "no_token"
	switch {
	case s.Held:
		st.Token, st.ConnectedAt = "token_held", &s.ObtainedAt
		if !s.Expiry.IsZero() {
			st.ExpiresAt = &s.Expiry
		}
	case s.LastError != "":
		st.Token = "error"
	}
	if s.LastError != "" {
		st.LastError, st.Since = s.LastError, &s.FailedAt
	}
	return st
}
