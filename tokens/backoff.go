package tokens

import (
	"math/rand/v2"
	"time"
)

// Backoff bounds after a failed token request: the first wait, its cap, and
// the longest Retry-After of a provider that is honoured.
const (
	backoffBase      = time.Second
	backoffCap       = time.Minute
	maxProviderRetry = 10 * time.Minute
)

// backoff returns the wait after the n-th consecutive failure (n ≥ 1):
// doubling from a second up to a minute, with up to a fifth of jitter so
// that connections that failed together do not retry together, and never
// less than the provider's Retry-After (up to ten minutes).
func backoff(n int, retryAfter time.Duration) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffCap; i++ {
		d *= 2
	}
	d = min(d, backoffCap)
	d -= rand.N(d/5 + 1)
	return max(d, min(retryAfter, maxProviderRetry))
}

// blocked returns the error that answers for a connection without making a
// token request, or nil when one may be made: while the connection backs off
// after a transient failure, and while the connector's client is refused and
// it is not yet time to try again. force (an operator's refresh) skips the
// connection's own backoff. probe, when the connector's wait is over, makes
// this caller the one that tries the client again (the others keep
// waiting until it tells).
func (k *Keeper) blocked(key Key, e entry, r Refresher, now time.Time, force, probe bool) error {
	if !force && now.Before(e.retryAt) {
		return &UnavailableError{RetryAfter: e.retryAt.Sub(now), Err: errBackingOff}
	}
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	s := k.cache.connectors[key.Connector]
	switch {
	case s == nil:
		return nil
	case s.refresher != r:
		// A reload brought a new configuration: try it at once.
		delete(k.cache.connectors, key.Connector)
		return nil
	case now.Before(s.retryAt):
		return &UnavailableError{RetryAfter: s.retryAt.Sub(now), Err: ErrMisconfigured}
	}
	if probe {
		s.retryAt = now.Add(backoff(s.failures+1, 0))
	}
	return nil
}

// failed records a transient failure of key's token request and returns
// how long the connection now backs off.
func (k *Keeper) failed(key Key, retryAfter time.Duration, msg string) time.Duration {
	now := k.now()
	var wait time.Duration
	k.cache.update(key, func(e *entry) {
		e.failures++
		wait = backoff(e.failures, retryAfter)
		e.retryAt = now.Add(wait)
		e.lastErr, e.lastErrAt = msg, now
	})
	return wait
}

// clientRefused records that the provider refuses connector's client.
func (k *Keeper) clientRefused(key Key, r Refresher, code string) time.Duration {
	now := k.now()
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	s := k.cache.connectors[key.Connector]
	if s == nil || s.refresher != r {
		s = &connectorState{refresher: r, since: now}
		k.cache.connectors[key.Connector] = s
	}
	s.failures++
	s.code = code
	wait := backoff(s.failures, 0)
	s.retryAt = now.Add(wait)
	k.cache.updateLocked(key, func(e *entry) {
		e.lastErr, e.lastErrAt = "the provider refuses the connector's client credentials ("+code+"); fix the connector's configuration", now
	})
	return wait
}

// succeeded clears the failure state of key and of its connector.
func (k *Keeper) succeeded(key Key) {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	k.cache.updateLocked(key, func(e *entry) {
		e.failures, e.retryAt, e.lastErr, e.lastErrAt = 0, time.Time{}, "", time.Time{}
	})
	delete(k.cache.connectors, key.Connector)
}
