package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

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
}

// status describes connector c's connection for subject (subjectErr: the
// subject could not be evaluated).
func (a *App) status(ctx context.Context, c *Connector, subject string, subjectErr error) connectorStatus {
	st := connectorStatus{Name: c.name, Provider: c.Provider, AuthorizeURL: a.authorizeURL(c.name)}
	if c.conn == nil {
		st.Status, st.AuthorizeURL = "unconfigured", ""
		return st
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
	return st
}

// disconnect revokes the connection's grant at the provider (RFC 7009)
// when the connector has a revocation URL, then deletes the stored tokens
// with every version and drops them from the cache. A failed revocation is
// returned as revokeErr, and the local delete happens all the same. err is
// tokens.ErrAuthorizationRequired when there was no connection.
func (a *App) disconnect(ctx context.Context, c *Connector, subject, by string) (revokeErr, err error) {
	key := tokens.Key{Connector: c.name, Subject: subject}
	log := a.logger.With(zap.String("connector", c.name), zap.String("by", by))
	tok, err := a.keeper.Stored(ctx, key)
	if errors.Is(err, tokens.ErrAuthorizationRequired) {
		return nil, err
	}
	if err != nil {
		// Unreadable: nothing to revoke, but it is deleted all the same.
		log.Warn("disconnecting a connection whose token cannot be read", zap.Error(err))
	}
	// Revoking the refresh token revokes the grant; without one, the
	// access token. A connection that needs authorization has neither.
	t, hint := tok.RefreshToken, "refresh_token"
	if t == "" {
		t, hint = tok.AccessToken, "access_token"
	}
	if c.conn != nil && t != "" {
		_, revokeErr = c.conn.Revoke(ctx, t, hint)
	}
	if err := a.keeper.Disconnect(ctx, key); err != nil {
		log.Error("disconnecting", zap.Error(err))
		return nil, err
	}
	if revokeErr != nil {
		log.Warn("disconnected, but revocation at the provider failed", zap.Error(revokeErr))
	} else {
		log.Info("connection disconnected")
	}
	a.telemetry.emit(eventDisconnected, key, map[string]any{"revoked": revokeErr == nil})
	return revokeErr, nil
}
