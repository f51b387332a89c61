package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// The operations on connections that both the connect routes and the admin
// API offer.

// connectorStatus is what is shown about a connector: never a secret.
type connectorStatus struct {
	Name        string     `json:"name"`
	Provider    string     `json:"provider,omitempty"`
	Status      string     `json:"status"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	ConnectedBy string     `json:"connected_by,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Since is when the connection came to need authorization.
	Since *time.Time `json:"since,omitempty"`
	// Unsaved is true while this instance holds a refreshed token set
	// that the store has not taken yet.
	Unsaved      bool   `json:"unsaved,omitempty"`
	PerUser      bool   `json:"per_user,omitempty"`
	Subject      string `json:"subject,omitempty"`
	Connections  *int   `json:"connections,omitempty"`
	AuthorizeURL string `json:"authorize_url,omitempty"`
	// StoreError is why the store could not be read, when the status is
	// unavailable, so that the page and the status JSON say what to fix.
	StoreError string `json:"store_error,omitempty"`
	// Metadata are the connection's metadata (never secrets).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Grant is the connector's grant when it is not the authorization
	// code's; Token then says what the proxy holds (grant.go).
	Grant string `json:"grant,omitempty"`
	Token string `json:"token,omitempty"`
}

// status describes connector c's connection for subject (subjectErr: the
// subject could not be evaluated).
func (a *App) status(ctx context.Context, c *Connector, subject string, subjectErr error) connectorStatus {
	st := connectorStatus{Name: c.name, Provider: c.Provider, AuthorizeURL: a.authorizeURL(c.name)}
	if c.unconfigured() {
		st.Status, st.AuthorizeURL = "unconfigured", ""
		return st
	}
	if !c.authorizes() {
		return grantStatus(st, c)
	}
	if c.Subject != "" {
		st.PerUser, st.Subject = true, subject
		if subjectErr != nil {
			st.Status = "subject_required"
			return st
		}
	}
	s, err := a.keeper.Status(ctx, tokens.Key{Connector: c.name, Subject: subject})
	switch {
	case err != nil:
		a.logger.Warn("reading connection status", zap.String("connector", c.name), zap.Error(err))
		st.Status, st.StoreError = "unavailable", err.Error()
	case s.Misconfigured != "":
		// Connections are kept; the operator must fix the client.
		st.Status = "misconfigured"
	case !s.Connected || !s.Usable:
		st.Status = "authorization_required"
	default:
		st.Status = "connected"
	}
	if s.LastError == "" && s.State == tokens.NeedsAuthorization {
		s.LastError = s.Reason
	}
	if !s.Since.IsZero() && s.State == tokens.NeedsAuthorization {
		st.Since = &s.Since
	}
	st.Unsaved = s.Unsaved
	if !s.Expiry.IsZero() {
		st.ExpiresAt = &s.Expiry
	}
	if !s.ConnectedAt.IsZero() {
		st.ConnectedAt = &s.ConnectedAt
	}
	st.LastError, st.ConnectedBy = s.LastError, s.ConnectedBy
	st.Metadata = s.Metadata.Map()
	return st
}

// revocation is what became of the grant at the provider on a disconnect.
// Revoked is true only when the provider confirmed it, and Reason is then
// "revoked"; otherwise Reason says why not: no_revocation_url (the connector has none, as Microsoft),
// no_token (the connection held no token to revoke), unconfigured,
// provider_error (the provider answered, but not 200) or unreachable
// (network error or time-out).
type revocation struct {
	Revoked bool   `json:"revoked"`
	Reason  string `json:"revocation"`
}

// revocationOf classifies Revoke's answer.
func revocationOf(revoked bool, err error) revocation {
	var pe *connector.ProviderError
	switch {
	case revoked:
		return revocation{Revoked: true, Reason: "revoked"}
	case errors.As(err, &pe):
		return revocation{Reason: "provider_error"}
	case err != nil:
		return revocation{Reason: "unreachable"}
	default:
		return revocation{Reason: "no_revocation_url"}
	}
}

// disconnect revokes the connection's grant at the provider (RFC 7009)
// when the connector has a revocation URL, then deletes the stored tokens
// with every version and drops them from the cache. What became of the
// revocation is returned, and the local delete happens whatever it was.
// err is tokens.ErrAuthorizationRequired when there was no connection.
func (a *App) disconnect(ctx context.Context, c *Connector, subject, by string) (revocation, error) {
	key := tokens.Key{Connector: c.name, Subject: subject}
	log := a.logger.With(zap.String("connector", c.name), zap.String("by", by))
	tok, err := a.keeper.Stored(ctx, key)
	if errors.Is(err, tokens.ErrAuthorizationRequired) {
		return revocation{}, err
	}
	if err != nil {
		// Unreadable: nothing to revoke, but it is deleted all the same.
		log.Warn("disconnecting a connection whose token cannot be read", zap.Error(err))
	}
	// The connector revokes the grant as its provider does: RFC 7009
	// with the refresh token (or else the access token), or the
	// provider's own call. A connection that needs authorization has
	// neither.
	var rev revocation
	var revokeErr error
	switch {
	case c.unconfigured():
		rev.Reason = "unconfigured"
	case tok.RefreshToken == "" && tok.AccessToken == "":
		rev.Reason = "no_token"
	default:
		var ok bool
		var conn *connector.Connector
		if conn, revokeErr = c.client(ctx); revokeErr == nil {
			ok, revokeErr = conn.RevokeGrant(ctx, connector.Tokens{Access: tok.AccessToken, Refresh: tok.RefreshToken, Expiry: tok.Expiry})
		}
		rev = revocationOf(ok, revokeErr)
	}
	// Only the grant read above ends: one the person made while its
	// revocation was under way stays.
	end := func() error { return a.keeper.DisconnectGrant(ctx, key, tok.Generation) }
	if err != nil {
		end = func() error { return a.keeper.Disconnect(ctx, key) }
	}
	if err := end(); errors.Is(err, tokens.ErrReplaced) {
		log.Info("not disconnected: the connection was authorized again meanwhile", zap.String("revocation", rev.Reason))
		return rev, err
	} else if err != nil {
		log.Error("disconnecting", zap.Error(err))
		return revocation{}, err
	}
	if revokeErr != nil {
		log.Warn("disconnected, but revocation at the provider failed", zap.String("revocation", rev.Reason), zap.Error(revokeErr))
	} else {
		log.Info("connection disconnected", zap.Bool("revoked", rev.Revoked), zap.String("revocation", rev.Reason))
	}
	a.telemetry.emit(eventDisconnected, key, map[string]any{"revoked": rev.Revoked, "revocation": rev.Reason})
	return rev, nil
}

// disconnected is the answer of both disconnect routes: the connection is
// gone here, and whether the provider confirmed the revocation (and if
// not, why not).
func disconnected(rev revocation) map[string]any {
	return map[string]any{"disconnected": true, "revoked": rev.Revoked, "revocation": rev.Reason}
}

// notDisconnected answers a disconnect that found the connection
// authorized again while the old grant's revocation was under way: the
// old grant was revoked (as rev says), the new one's record stays.
func notDisconnected(connector string, rev revocation) map[string]any {
	return map[string]any{"error": "reconnected", "connector": connector, "disconnected": false,
		"revoked": rev.Revoked, "revocation": rev.Reason,
		"message": "the connection was authorized again while it was being disconnected: the earlier grant was revoked as revocation says, and the new authorization was kept (a provider whose revocation ends all of the app's grants for the user ends it too)"}
}
