package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// job is one refresh of one connection: what to refresh with, when the
// stored token set needs it, and what asked.
type job struct {
	key Key
	r   Refresher
	p   Policy
	// trigger is "proactive", "401", "admin" or "keepalive".
	trigger string
	// want reports whether a token set read at now must be refreshed.
	want func(t Token, now time.Time) bool
	// force skips the connection's backoff (an operator asked).
	force bool
}

// proactive wants token sets that are due or no longer usable.
func proactive(p Policy) func(Token, time.Time) bool {
	return func(t Token, now time.Time) bool { return t.due(now, p.Margin) || !t.Usable(now) }
}

// do runs j once per connection at a time; callers that arrive while it
// runs share its result. The work runs on a context of its own, bounded by
// the lease budget, so neither an impatient client nor a reload cancels a
// refresh half way; a caller waits at most the policy's MaxWait for it.
//
// Callers that wait are bounded per connector (the policy's MaxWaiting):
// beyond it a caller is answered at once with ErrOverloaded while the job
// still starts in the background, so that shedding never stalls the work.
func (k *Keeper) do(ctx context.Context, j job) (Token, error) {
	g := k.gate(j.key.Connector)
	if err := g.enter(j.p.maxWaiting()); err != nil {
		k.background(j)
		return Token{}, err
	}
	defer g.leave()
	ch := make(chan singleflight.Result, 1)
	k.bgWork.Add(1)
	go func() {
		defer k.bgWork.Done()
		v, err, _ := k.cache.flight.Do(j.key.String(), func() (any, error) { return k.run(j) })
		ch <- singleflight.Result{Val: v, Err: err}
	}()
	t := time.NewTimer(j.p.maxWait())
	defer t.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return Token{}, res.Err
		}
		return res.Val.(Token), nil
	case <-t.C:
		return Token{}, &UnavailableError{RetryAfter: 2 * time.Second, Err: errWaited}
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// background starts j unless a job for the connection already runs.
func (k *Keeper) background(j job) {
	k.bgWork.Add(1)
	go func() {
		defer k.bgWork.Done()
		k.cache.flight.Do(j.key.String(), func() (any, error) { return k.run(j) })
	}()
}

// run reads the connection and refreshes it if j wants it, under the
// lease. It is the only code that redeems refresh tokens. It runs holding
// a slot of the connector's gate, given back while it waits for another
// replica's lease.
func (k *Keeper) run(j job) (Token, error) {
	var due time.Time
	k.cache.update(j.key, func(e *entry) {
		e.refreshing = true
		if e.missingAt.IsZero() && e.tok.AccessToken != "" {
			due = e.tok.DueAt(j.p.Margin)
		}
	})
	defer k.cache.update(j.key, func(e *entry) {
		e.refreshing = false
		if j.trigger == "401" {
			e.forcedEnd = k.now()
		}
	})
	s := k.takeSlot(j.key, due, j.p)
	defer s.free()
	giveUp := k.now().Add(k.budget.lease + k.budget.skew)
	looks, settled := 0, false
	for {
		if e, _ := k.cache.get(j.key); e.pending != nil {
			if !settled && k.settle(j, e.pending) {
				settled = true
				continue
			}
			return k.refreshUnsaved(j, e.pending)
		}
		rec, version, err := k.read(j.key)
		if err != nil {
			return Token{}, err
		}
		now := k.now()
		tok := rec.tok
		if !j.want(tok, now) {
			k.remember(j.key, tok, version)
			return tok, nil
		}
		if !tok.Refreshable(now) {
			return k.cannotRefresh(j.key, tok, version, now)
		}
		e, _ := k.cache.get(j.key)
		if err := k.blocked(j.key, e, j.r, now, j.force, true); err != nil {
			return k.serveOr(j.key, tok, version, err)
		}
		if rec.lease.heldBy(k.cache.holder, now, k.budget.skew) {
			// Another replica is refreshing: its result will be
			// in the record.
			if now.After(giveUp) {
				return k.serveOr(j.key, tok, version, &UnavailableError{RetryAfter: 5 * time.Second,
					Err: errors.New("waiting for another replica's refresh")})
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
			// No token request was made: nothing is lost.
			return k.serveOr(j.key, tok, version, &UnavailableError{RetryAfter: 5 * time.Second,
				Err: fmt.Errorf("taking the refresh lease: %w", err)})
		}
		start := time.Now()
		tok, err, again := k.redeem(j, rec, l, lv)
		if err == nil && !again {
			s.g.took(time.Since(start))
		}
		if again {
			continue
		}
		return tok, err
	}
}

// redeem makes the token request while holding lease l, carried by the
// record's version lv, and acts on the answer. again means "read the
// record again".
func (k *Keeper) redeem(j job, rec record, l lease, lv int) (Token, error, bool) {
	l, lv, err := k.ensureLease(j.key, rec, l, lv)
	if errors.Is(err, kv.ErrConflict) {
		return Token{}, nil, true
	}
	if err != nil {
		return k.serveOrErr(j.key, rec.tok, lv, &UnavailableError{RetryAfter: 5 * time.Second,
			Err: fmt.Errorf("renewing the refresh lease: %w", err)})
	}
	ctx, cancel := context.WithDeadline(context.Background(), k.budget.redeemBy(l.until))
	ctx, cancel2 := context.WithTimeout(ctx, k.budget.token)
	ot, err := j.r.Refresh(ctx, rec.tok.RefreshToken)
	cancel2()
	cancel()
	now := k.now()
	if err == nil {
		next := fromResponse(j.r, ot, rec.tok, now)
		tok, err := k.commit(j, &pendingWrite{rec: record{tok: next}, cas: lv, base: rec.tok.RefreshToken, triggers: []string{j.trigger}})
		return tok, err, false
	}
	switch connector.ClassOf(err) {
	case connector.GrantRejected:
		return k.grantRejected(j, rec.tok.RefreshToken, err)
	case connector.ClientRejected:
		k.obs.Refreshed(j.key, j.trigger, "misconfigured")
		wait := k.clientRefused(j.key, j.r, providerCode(err))
		k.log.Error("the provider refuses the connector's client; connections are kept, fix the configuration",
			zap.String("connection", j.key.String()), errField(err), zap.Duration("retry_in", wait))
		k.releaseLease(j.key, rec, lv)
		return k.serveOrErr(j.key, rec.tok, lv, &UnavailableError{RetryAfter: wait, Err: fmt.Errorf("%w: %w", ErrMisconfigured, err)})
	}
	k.obs.Refreshed(j.key, j.trigger, "transient")
	wait := k.failed(j.key, connector.RetryAfterOf(err), "refresh failed temporarily; will retry")
	k.log.Warn("refresh failed; backing off", zap.String("connection", j.key.String()), errField(err), zap.Duration("retry_in", wait))
	k.releaseLease(j.key, rec, lv)
	return k.serveOrErr(j.key, rec.tok, lv, &UnavailableError{RetryAfter: wait, Err: err})
}

// commit writes the new token set pw. If the store fails, the token set
// stays authoritative in memory and a writer keeps trying.
func (k *Keeper) commit(j job, pw *pendingWrite) (Token, error) {
	tok, err, ok := k.write(j.key, pw)
	if ok {
		return tok, err
	}
	k.log.Error("the store did not take a refreshed token set; keeping it in memory and retrying",
		zap.String("connection", j.key.String()), errField(err))
	k.cache.update(j.key, func(e *entry) {
		e.tok, e.missingAt, e.pending = pw.rec.tok, time.Time{}, pw
		e.failures, e.retryAt = 0, time.Time{}
	})
	k.startWriter(j.key, pw)
	return pw.rec.tok, nil
}

// grantRejected handles invalid_grant for the refresh token rt. It ends
// the connection only if the store still holds rt under the same grant:
// otherwise another writer won, and its token set is used.
func (k *Keeper) grantRejected(j job, rt string, cause error) (Token, error, bool) {
	rec, version, err := k.read(j.key)
	if err != nil {
		return Token{}, err, false
	}
	if rec.tok.RefreshToken != rt {
		k.log.Info("refresh token rejected, but the store holds another one; using it", zap.String("connection", j.key.String()))
		return Token{}, nil, true
	}
	now := k.now()
	reason := "the provider rejected the refresh token (" + providerCode(cause) + "); authorize again"
	mark := record{tok: Token{Generation: rec.tok.Generation, ConnectedAt: rec.tok.ConnectedAt, ConnectedBy: rec.tok.ConnectedBy},
		state: NeedsAuthorization, reason: reason, since: now}
	ctx, cancel := k.budget.storeCtx()
	v, err := k.store.Put(ctx, j.key.tokenPath(), mark.fields(), version)
	cancel()
	if errors.Is(err, kv.ErrConflict) {
		return Token{}, nil, true
	}
	if err != nil {
		// The record keeps a refresh token the provider refuses; the
		// next attempt is refused and marks it again.
		k.log.Error("marking a connection as needing authorization", zap.String("connection", j.key.String()), errField(err))
	}
	k.obs.Refreshed(j.key, j.trigger, "invalid_grant")
	k.log.Warn("refresh rejected by the provider; the connection needs authorization",
		zap.String("connection", j.key.String()), errField(cause))
	k.cache.update(j.key, func(e *entry) {
		*e = entry{version: max(v, version), missingAt: now, checkedAt: now, lastErr: reason, lastErrAt: now}
	})
	return Token{}, ErrAuthorizationRequired, false
}

func (k *Keeper) cannotRefresh(key Key, tok Token, version int, now time.Time) (Token, error) {
	if tok.Usable(now) {
		k.remember(key, tok, version)
		return tok, nil
	}
	k.cache.update(key, func(e *entry) {
		e.lastErr, e.lastErrAt = "the access token expired and there is no usable refresh token; authorize again", now
		e.missingAt = now
	})
	return Token{}, ErrAuthorizationRequired
}

// serveOr serves tok while it is valid, else returns err.
func (k *Keeper) serveOr(key Key, tok Token, version int, err error) (Token, error) {
	if tok.Usable(k.now()) {
		k.remember(key, tok, version)
		return tok, nil
	}
	return Token{}, err
}

func (k *Keeper) serveOrErr(key Key, tok Token, version int, err error) (Token, error, bool) {
	t, err := k.serveOr(key, tok, version, err)
	return t, err, false
}

// read reads the connection's record. A missing record, a tombstone and a
// connection that needs authorization are ErrAuthorizationRequired (and
// cached as such); a store failure is an UnavailableError.
func (k *Keeper) read(key Key) (record, int, error) {
	// What the read finds is cached only if the connection did not
	// change here meanwhile (a reconnect must not be taken back).
	seen := k.cache.lookup(key)
	ctx, cancel := k.budget.storeCtx()
	defer cancel()
	e, err := k.store.Get(ctx, key.tokenPath())
	now := k.now()
	if errors.Is(err, kv.ErrNotFound) {
		k.cache.updateIfSame(key, seen, func(en *entry) {
			if en.pending == nil {
				en.tok, en.version, en.missingAt, en.checkedAt = Token{}, e.Version, now, now
			}
		})
		return record{}, e.Version, ErrAuthorizationRequired
	}
	if err != nil {
		return record{}, 0, &UnavailableError{RetryAfter: 5 * time.Second, Err: fmt.Errorf("reading token: %w", err)}
	}
	rec, err := parseRecord(e.Data)
	if err != nil {
		return record{}, 0, &UnavailableError{RetryAfter: 30 * time.Second, Err: fmt.Errorf("connection %s: %w", key, err)}
	}
	if rec.state != Active {
		k.cache.updateIfSame(key, seen, func(en *entry) {
			if en.pending == nil {
				*en = entry{version: e.Version, missingAt: now, checkedAt: now, lastErr: rec.reason, lastErrAt: rec.since}
			}
		})
		return rec, e.Version, ErrAuthorizationRequired
	}
	return rec, e.Version, nil
}

// remember caches tok, read at or written as version, unless the cache
// already holds a newer version or a token set still to be written.
func (k *Keeper) remember(key Key, tok Token, version int) {
	now := k.now()
	k.cache.update(key, func(e *entry) {
		if e.pending != nil || version < e.version {
			return
		}
		e.tok, e.version, e.missingAt, e.checkedAt = tok, version, time.Time{}, now
	})
}

// providerCode is the RFC 6749 error code of a token endpoint's error, or a
// word for its kind.
func providerCode(err error) string {
	var pe *connector.ProviderError
	if errors.As(err, &pe) && pe.Code != "" {
		return pe.Code
	}
	return "refused"
}
