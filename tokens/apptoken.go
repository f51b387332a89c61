package tokens

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
)

// AppSource gets an application's own token (the client credentials
// grant); *connector.Connector is one. Its errors are classified with
// connector.ClassOf.
type AppSource interface {
	ClientCredentials(ctx context.Context) (*oauth2.Token, error)
}

// AppToken holds one connector's application token (client credentials)
// in memory: there is no user and nothing worth storing, as a new token is
// one request away. It is fetched on demand, once at a time in this
// process, and again when due by the policy's margin (capped at a third of
// the token's lifetime, as for connections). After a failure the token
// endpoint is left alone for a backoff, during which requests get the
// failure at once.
type AppToken struct {
	group singleflight.Group
	now   func() time.Time

	mu       sync.Mutex
	tok      Token
	err      error     // the last fetch's failure, until a fetch succeeds
	retryAt  time.Time // no fetch before this, after a failure
	failures int
	failedAt time.Time
}

// NewAppToken makes an empty holder; now is the clock (nil: time.Now).
func NewAppToken(now func() time.Time) *AppToken {
	if now == nil {
		now = time.Now
	}
	return &AppToken{now: now}
}

// AppState is what may be shown about an application token: never the
// token.
type AppState struct {
	// Held is true while a usable token is held.
	Held bool
	// Expiry is the held token's expiry (zero if none or unknown).
	Expiry time.Time
	// ObtainedAt is when the held token was obtained.
	ObtainedAt time.Time
	// LastError is the provider's error code of the last failed fetch
	// ("invalid_client"), or a word for its kind; empty after a success.
	LastError string
	// FailedAt is when that fetch failed.
	FailedAt time.Time
}

// State returns what may be shown about the token.
func (a *AppToken) State() AppState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := AppState{Held: a.tok.Usable(a.now())}
	if st.Held {
		st.Expiry, st.ObtainedAt = a.tok.Expiry, a.tok.ObtainedAt
	}
	if a.err != nil {
		st.LastError, st.FailedAt = errorCode(a.err), a.failedAt
	}
	return st
}

// Token returns a usable application token. A fresh one touches nothing;
// one that is due but still valid is returned while a new one is fetched
// in the background; otherwise the caller waits for the fetch, at most the
// policy's MaxWait. Failures are *UnavailableError (wrapping
// ErrMisconfigured when the provider refuses the client), carrying the
// connector's error with the provider's code.
func (a *AppToken) Token(ctx context.Context, src AppSource, p Policy) (Token, error) {
	now := a.now()
	a.mu.Lock()
	tok, err, retryAt := a.tok, a.err, a.retryAt
	a.mu.Unlock()
	switch {
	case tok.Usable(now) && !tok.due(now, p.Margin):
		return tok, nil
	case now.Before(retryAt):
		if tok.Usable(now) {
			return tok, nil // the failed refresh is tried again later
		}
		return Token{}, unavailable(err, retryAt.Sub(now))
	case tok.Usable(now):
		a.group.DoChan("", func() (any, error) { return a.fetch(src, p) })
		return tok, nil
	}
	ch := a.group.DoChan("", func() (any, error) { return a.fetch(src, p) })
	timer := time.NewTimer(p.maxWait())
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			a.mu.Lock()
			wait := a.retryAt.Sub(a.now())
			a.mu.Unlock()
			return Token{}, unavailable(res.Err, wait)
		}
		return res.Val.(Token), nil
	case <-timer.C:
		return Token{}, &UnavailableError{RetryAfter: time.Second, Err: errWaited}
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// Rejected tells that the upstream refused the token rejected: if it is
// still the one held, and it was obtained longer than cooldown ago, it is
// dropped so that the next request fetches another. A storm of 401s costs
// at most one token request per cooldown.
func (a *AppToken) Rejected(rejected string, cooldown time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok.AccessToken == rejected && a.now().Sub(a.tok.ObtainedAt) >= cooldown {
		a.tok = Token{}
	}
}

// fetch runs in the single flight, detached from any one request: the
// token endpoint's answer is kept for everybody.
func (a *AppToken) fetch(src AppSource, p Policy) (Token, error) {
	a.mu.Lock()
	if now := a.now(); a.tok.Usable(now) && !a.tok.due(now, p.Margin) {
		// A flight that ended just before this one began got it.
		tok := a.tok
		a.mu.Unlock()
		return tok, nil
	}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTokenTimeout)
	defer cancel()
	ot, err := src.ClientCredentials(ctx)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.failures++
		a.err, a.failedAt = err, now
		a.retryAt = now.Add(backoff(a.failures, connector.RetryAfterOf(err)))
		return Token{}, err
	}
	a.tok = FromOAuth2(ot, Token{}, now)
	a.tok.RefreshToken, a.tok.RefreshExpiry = "", time.Time{} // none is used
	a.err, a.failures, a.retryAt = nil, 0, time.Time{}
	return a.tok, nil
}

// defaultTokenTimeout bounds a fetch made for no request in particular.
const defaultTokenTimeout = 30 * time.Second

// unavailable wraps a fetch's failure for the proxy.
func unavailable(err error, wait time.Duration) error {
	if wait < time.Second {
		wait = time.Second
	}
	if connector.ClassOf(err) == connector.ClientRejected {
		return &UnavailableError{RetryAfter: wait, Err: fmt.Errorf("%w: %w", ErrMisconfigured, err)}
	}
	return &UnavailableError{RetryAfter: wait, Err: err}
}

// errorCode is the provider's error code of err, or a word for its kind.
func errorCode(err error) string {
	var pe *connector.ProviderError
	if errors.As(err, &pe) {
		if pe.Code != "" {
			return pe.Code
		}
		return "refused"
	}
	return "unreachable"
}

// ProviderCode returns the token endpoint's RFC 6749 error code carried by
// err ("invalid_client"), or "" if it carries none.
func ProviderCode(err error) string {
	var pe *connector.ProviderError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
