package tokens

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Per-resource tokens. A connection's token set is for the scopes it was
// authorized with; some providers (Microsoft Entra) also redeem its refresh
// token for access tokens to other resources' scopes. Those access tokens
// live in a side cache of the connection, in memory only: they last about
// an hour and are obtained again from the refresh token in one request, so
// storing them would put more secrets at rest, and change the record's
// schema that every replica reads, for little. Each replica obtains its own.
//
// A scoped refresh redeems the connection's refresh token exactly as a
// refresh of its own token set does: under the refresh lease, in the same
// per-connection single flight (so this process never redeems one refresh
// token twice at once), and a rotated refresh token in the answer becomes
// the connection's, written through the same durable path (a pending write
// while the store fails). The connection's own access token is kept.

// ScopedRefresher redeems a refresh token for other scopes than the
// grant's; *connector.Connector is one.
type ScopedRefresher interface {
	Refresher
	RefreshScoped(ctx context.Context, refreshToken string, scopes []string) (*oauth2.Token, error)
}

// maxScoped bounds the side cache: per-resource tokens of that many
// connection and scope set pairs.
const maxScoped = DefaultMaxConnections

// scopedTokens is the side cache of per-resource tokens, in the Cache so
// that it outlives a reload as the connections' token sets do.
type scopedTokens struct {
	mu sync.RWMutex
	m  map[scopedKey]*scopedEntry
}

type scopedKey struct {
	key    Key
	scopes string // sorted, space-separated
}

// scopedEntry is what is known of one connection's token for one scope set.
type scopedEntry struct {
	// tok holds the access token and its expiry, and the generation of
	// the grant it was obtained from: a token of another grant is never
	// served.
	tok        Token
	refreshing bool
	forcedEnd  time.Time // end of the last refresh triggered by a 401
	failures   int
	retryAt    time.Time
	// denied is set when the provider refused the refresh token for
	// these scopes (invalid_grant) while the connection's grant stands:
	// consent for the resource is missing, or it needs the person.
	denied bool
}

func scopedKeyOf(key Key, scopes []string) scopedKey {
	s := slices.Clone(scopes)
	slices.Sort(s)
	return scopedKey{key: key, scopes: strings.Join(slices.Compact(s), " ")}
}

func (s *scopedTokens) get(k scopedKey) scopedEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e := s.m[k]; e != nil {
		return *e
	}
	return scopedEntry{}
}

func (s *scopedTokens) update(k scopedKey, now time.Time, f func(e *scopedEntry)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		if s.m == nil {
			s.m = map[scopedKey]*scopedEntry{}
		}
		if len(s.m) >= maxScoped {
			s.evictLocked(now)
		}
		e = &scopedEntry{}
		s.m[k] = e
	}
	f(e)
}

// evictLocked drops expired tokens, then any idle entries, until a tenth
// of the room is free.
func (s *scopedTokens) evictLocked(now time.Time) {
	for k, e := range s.m {
		if !e.refreshing && !e.tok.Usable(now) {
			delete(s.m, k)
		}
	}
	for k, e := range s.m {
		if len(s.m) <= maxScoped-maxScoped/10 {
			return
		}
		if !e.refreshing {
			delete(s.m, k)
		}
	}
}

// forget drops the connection's tokens for every scope set: its grant is
// gone.
func (s *scopedTokens) forget(key Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.m {
		if k.key == key && !e.refreshing {
			delete(s.m, k)
		}
	}
}

// TokenFor returns a usable access token of the connection for scopes,
// obtained with the connection's refresh token. The connection must be
// usable (Token): a disconnected connection's tokens are never served.
// While the scoped token is fresh this touches neither the store nor the
// network; one due for refresh is served while a refresh runs in the
// background; an expired one waits for the refresh, at most MaxWait.
// ErrAuthorizationRequired also answers a provider that refuses the refresh
// token for these scopes while it still honours the grant (the person must
// consent to the resource, or satisfy a policy).
func (k *Keeper) TokenFor(ctx context.Context, key Key, r ScopedRefresher, p Policy, scopes []string) (Token, error) {
	prim, err := k.Token(ctx, key, r, p)
	if errors.Is(err, ErrAuthorizationRequired) {
		k.cache.scoped.forget(key)
	}
	if err != nil {
		return Token{}, err
	}
	sk := scopedKeyOf(key, scopes)
	now := k.now()
	e := k.cache.scoped.get(sk)
	if e.tok.Generation == prim.Generation {
		switch {
		case e.denied && now.Before(e.retryAt):
			return Token{}, ErrAuthorizationRequired
		case !e.tok.Usable(now) && now.Before(e.retryAt):
			return Token{}, &UnavailableError{RetryAfter: e.retryAt.Sub(now), Err: errBackingOff}
		case e.tok.AccessToken != "" && !e.tok.due(now, p.Margin):
			return e.tok, nil
		case e.tok.Usable(now):
			if !e.refreshing && !now.Before(e.retryAt) {
				k.bgWork.Add(1)
				go func() {
					defer k.bgWork.Done()
					k.scopedDo(sk, r, p, "proactive", proactive(p))
				}()
			}
			return e.tok, nil
		}
	}
	return k.waitScoped(ctx, sk, r, p, "proactive", proactive(p))
}

// RejectedFor is Rejected for a token obtained with TokenFor: it returns
// the token to retry with, or ErrNoRetry.
func (k *Keeper) RejectedFor(ctx context.Context, key Key, r ScopedRefresher, p Policy, scopes []string, rejected string) (Token, error) {
	sk := scopedKeyOf(key, scopes)
	now := k.now()
	e := k.cache.scoped.get(sk)
	prim, _ := k.cache.get(key)
	switch {
	case e.tok.AccessToken != rejected && e.tok.Usable(now) && e.tok.Generation == prim.tok.Generation:
		return e.tok, nil
	case !e.refreshing && !e.forcedEnd.IsZero() && now.Sub(e.forcedEnd) < p.Cooldown:
		return Token{}, ErrNoRetry
	}
	tok, err := k.waitScoped(ctx, sk, r, p, "401", func(t Token, now time.Time) bool {
		return t.AccessToken == rejected || !t.Usable(now)
	})
	if err != nil {
		return Token{}, err
	}
	if tok.AccessToken == rejected {
		return Token{}, ErrNoRetry
	}
	return tok, nil
}

// waitScoped runs scopedDo and waits for it at most the policy's MaxWait.
// Its callers count among the connector's waiting requests, as do's do.
func (k *Keeper) waitScoped(ctx context.Context, sk scopedKey, r ScopedRefresher, p Policy, trigger string, want func(Token, time.Time) bool) (Token, error) {
	type result struct {
		tok Token
		err error
	}
	ch := make(chan result, 1)
	k.bgWork.Add(1)
	go func() {
		defer k.bgWork.Done()
		tok, err := k.scopedDo(sk, r, p, trigger, want)
		ch <- result{tok, err}
	}()
	g := k.gate(sk.key.Connector)
	if err := g.enter(p.maxWaiting()); err != nil {
		return Token{}, err // the work goes on in the background
	}
	defer g.leave()
	t := time.NewTimer(p.maxWait())
	defer t.Stop()
	select {
	case res := <-ch:
		return res.tok, res.err
	case <-t.C:
		return Token{}, &UnavailableError{RetryAfter: 2 * time.Second, Err: errWaited}
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// scopedDo refreshes the scoped token if want says so, in the connection's
// single flight: the flight it joins when another refresh of the connection
// runs is waited for, and the side cache looked at again. The flight's own
// result is the connection's token set (after a proactive check), for the
// callers of Token that join it.
func (k *Keeper) scopedDo(sk scopedKey, r ScopedRefresher, p Policy, trigger string, want func(Token, time.Time) bool) (Token, error) {
	j := job{key: sk.key, r: r, p: p, trigger: trigger}
	for range 3 {
		ran := false
		var tok Token
		var serr error
		_, err, _ := k.cache.flight.Do(sk.key.String(), func() (any, error) {
			ran = true
			tok, serr = k.scopedRun(j, sk, r, want)
			// Callers of Token that joined this flight expect the
			// connection's token set, fresh.
			return k.run(job{key: sk.key, r: r, p: p, trigger: "proactive", want: proactive(p)})
		})
		if ran {
			return tok, serr
		}
		// Another refresh of the connection ran; it may have been ours
		// (another caller's scoped refresh) or not.
		if err != nil {
			return Token{}, err
		}
		e := k.cache.scoped.get(sk)
		prim, _ := k.cache.get(sk.key)
		if e.tok.AccessToken != "" && e.tok.Generation == prim.tok.Generation && !want(e.tok, k.now()) {
			return e.tok, nil
		}
	}
	return Token{}, &UnavailableError{RetryAfter: time.Second, Err: errWaited}
}

// scopedRun obtains a token for sk's scopes under the refresh lease, unless
// the side cache already holds one that want does not reject.
func (k *Keeper) scopedRun(j job, sk scopedKey, r ScopedRefresher, want func(Token, time.Time) bool) (Token, error) {
	k.cache.scoped.update(sk, k.now(), func(e *scopedEntry) { e.refreshing = true })
	defer k.cache.scoped.update(sk, k.now(), func(e *scopedEntry) {
		e.refreshing = false
		if j.trigger == "401" {
			e.forcedEnd = k.now()
		}
	})
	// Bounded with the connection's own refreshes: a wave of scoped
	// tokens must not outrun max_concurrent_refreshes either.
	var due time.Time
	if e := k.cache.scoped.get(sk); e.tok.AccessToken != "" {
		due = e.tok.DueAt(j.p.Margin)
	}
	s := k.takeSlot(j.key, due, j.p)
	defer s.free()
	scopes := strings.Fields(sk.scopes)
	giveUp := k.now().Add(k.budget.lease + k.budget.skew)
	looks, settled, replaced := 0, false, false
	for {
		if e, _ := k.cache.get(j.key); e.pending != nil {
			if !settled && k.settle(j, e.pending) {
				settled = true
				continue
			}
			return k.scopedUnsaved(j, sk, r, scopes, e.pending)
		}
		rec, version, err := k.read(j.key)
		if err != nil {
			if errors.Is(err, ErrAuthorizationRequired) {
				k.cache.scoped.forget(j.key)
			}
			return Token{}, err
		}
		now := k.now()
		if e := k.cache.scoped.get(sk); e.tok.AccessToken != "" && e.tok.Generation == rec.tok.Generation && !want(e.tok, now) {
			return e.tok, nil // obtained meanwhile
		}
		if !rec.tok.Refreshable(now) {
			return Token{}, ErrAuthorizationRequired
		}
		if e := k.cache.scoped.get(sk); now.Before(e.retryAt) && e.tok.Generation == rec.tok.Generation {
			if e.denied {
				return Token{}, ErrAuthorizationRequired
			}
			return Token{}, &UnavailableError{RetryAfter: e.retryAt.Sub(now), Err: errBackingOff}
		}
		ce, _ := k.cache.get(j.key)
		if err := k.blocked(j.key, ce, j.r, now, false, true); err != nil {
			return Token{}, err
		}
		if rec.lease.heldBy(k.cache.holder, now, k.budget.skew) {
			if now.After(giveUp) {
				return Token{}, &UnavailableError{RetryAfter: 5 * time.Second, Err: errors.New("waiting for another replica's refresh")}
			}
			looks++
			s.pause(s.g.leaseWait(looks, rec.lease, now, k.budget.skew))
			continue
		}
		l, lv, err := k.takeLease(j.key, rec, version)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return Token{}, &UnavailableError{RetryAfter: 5 * time.Second, Err: fmt.Errorf("taking the refresh lease: %w", err)}
		}
		l, lv, err = k.ensureLease(j.key, rec, l, lv)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return Token{}, &UnavailableError{RetryAfter: 5 * time.Second, Err: fmt.Errorf("renewing the refresh lease: %w", err)}
		}
		start := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), k.budget.redeemBy(l.until))
		ctx, cancel2 := context.WithTimeout(ctx, k.budget.token)
		ot, err := r.RefreshScoped(ctx, rec.tok.RefreshToken, scopes)
		cancel2()
		cancel()
		now = k.now()
		if err == nil {
			s.g.took(time.Since(start))
			next, scoped := scopedResult(ot, rec.tok, now)
			// The write releases the lease and keeps a rotated
			// refresh token, the connection's access token unchanged.
			stored, err := k.commit(j, &pendingWrite{rec: record{tok: next}, cas: lv, base: rec.tok.RefreshToken, triggers: []string{"scoped"}})
			if err == nil && stored.Generation != scoped.Generation && !replaced {
				// Connected again meanwhile: the token belongs to a
				// grant that is gone; the new one gets its own.
				replaced = true
				continue
			}
			if err != nil || stored.Generation != scoped.Generation {
				return Token{}, cmp.Or(err, ErrAuthorizationRequired)
			}
			k.keepScoped(sk, scoped, now)
			return scoped, nil
		}
		tok, err, again := k.scopedFailed(j, sk, rec, lv, err, now)
		if again {
			continue
		}
		return tok, err
	}
}

// scopedFailed acts on a refused or failed scoped refresh made under the
// lease carried by version lv. again means "read the record again".
func (k *Keeper) scopedFailed(j job, sk scopedKey, rec record, lv int, cause error, now time.Time) (Token, error, bool) {
	k.releaseLease(j.key, rec, lv)
	switch connector.ClassOf(cause) {
	case connector.GrantRejected:
		cur, _, err := k.read(j.key)
		if err != nil {
			return Token{}, err, false
		}
		if cur.tok.RefreshToken != rec.tok.RefreshToken {
			return Token{}, nil, true // another writer rotated it
		}
		// The grant stands for its own scopes (its refresh is what
		// says otherwise); these need the person.
		k.obs.Refreshed(j.key, "scoped", "invalid_grant")
		k.log.Warn("the provider refuses the refresh token for these scopes; the person must authorize them",
			zap.String("connection", j.key.String()), zap.String("scopes", sk.scopes), errField(cause))
		k.cache.scoped.update(sk, now, func(e *scopedEntry) {
			*e = scopedEntry{refreshing: e.refreshing, denied: true, retryAt: now.Add(30 * time.Second),
				tok: Token{Generation: rec.tok.Generation}}
		})
		return Token{}, ErrAuthorizationRequired, false
	case connector.ClientRejected:
		k.obs.Refreshed(j.key, "scoped", "misconfigured")
		wait := k.clientRefused(j.key, j.r, providerCode(cause))
		return Token{}, &UnavailableError{RetryAfter: wait, Err: fmt.Errorf("%w: %w", ErrMisconfigured, cause)}, false
	}
	k.obs.Refreshed(j.key, "scoped", "transient")
	var wait time.Duration
	k.cache.scoped.update(sk, now, func(e *scopedEntry) {
		if e.tok.Generation != rec.tok.Generation {
			// The backoff is this grant's.
			*e = scopedEntry{refreshing: e.refreshing, tok: Token{Generation: rec.tok.Generation}}
		}
		e.failures++
		wait = backoff(e.failures, connector.RetryAfterOf(cause))
		e.retryAt = now.Add(wait)
	})
	k.log.Warn("scoped refresh failed; backing off", zap.String("connection", j.key.String()),
		zap.String("scopes", sk.scopes), errField(cause), zap.Duration("retry_in", wait))
	tok := k.cache.scoped.get(sk).tok
	if tok.Usable(now) && tok.Generation == rec.tok.Generation {
		return tok, nil, false
	}
	return Token{}, &UnavailableError{RetryAfter: wait, Err: cause}, false
}

// scopedUnsaved obtains the scoped token with the refresh token of a token
// set the store has not taken yet (as refreshUnsaved does, without a
// lease), and puts a rotated refresh token into that pending write.
func (k *Keeper) scopedUnsaved(j job, sk scopedKey, r ScopedRefresher, scopes []string, pw *pendingWrite) (Token, error) {
	k.cache.mu.RLock()
	rec := pw.rec
	k.cache.mu.RUnlock()
	now := k.now()
	if rec.state != Active || !rec.tok.Refreshable(now) {
		return Token{}, ErrAuthorizationRequired
	}
	ce, _ := k.cache.get(j.key)
	if err := k.blocked(j.key, ce, j.r, now, false, true); err != nil {
		return Token{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.budget.token)
	ot, err := r.RefreshScoped(ctx, rec.tok.RefreshToken, scopes)
	cancel()
	now = k.now()
	if err != nil {
		if connector.ClassOf(err) == connector.GrantRejected {
			k.cache.scoped.update(sk, now, func(e *scopedEntry) {
				*e = scopedEntry{refreshing: e.refreshing, denied: true, retryAt: now.Add(30 * time.Second),
					tok: Token{Generation: rec.tok.Generation}}
			})
			return Token{}, ErrAuthorizationRequired
		}
		return Token{}, &UnavailableError{RetryAfter: 5 * time.Second, Err: err}
	}
	next, scoped := scopedResult(ot, rec.tok, now)
	if _, err := k.carry(j, pw, rec.tok, func(t Token) Token {
		t.RefreshToken, t.RefreshExpiry = next.RefreshToken, next.RefreshExpiry
		return t
	}); err != nil {
		return Token{}, err
	}
	k.keepScoped(sk, scoped, now)
	return scoped, nil
}

// scopedResult splits a scoped refresh's answer into the connection's next
// token set (prev with a rotated refresh token, if any) and the scoped
// token.
func scopedResult(ot *oauth2.Token, prev Token, now time.Time) (next, scoped Token) {
	got := FromOAuth2(ot, prev, now)
	next = prev
	next.RefreshToken, next.RefreshExpiry = got.RefreshToken, got.RefreshExpiry
	scoped = Token{AccessToken: got.AccessToken, TokenType: got.TokenType, Scope: got.Scope,
		Expiry: got.Expiry, ObtainedAt: now, Generation: prev.Generation}
	return next, scoped
}

func (k *Keeper) keepScoped(sk scopedKey, tok Token, now time.Time) {
	k.cache.scoped.update(sk, now, func(e *scopedEntry) {
		e.tok, e.failures, e.retryAt, e.denied = tok, 0, time.Time{}, false
	})
}
