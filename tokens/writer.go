package tokens

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// pendingWrite is a connection's token set on its way to the store. Once a
// provider has rotated a refresh token, the new one is the only one it
// honours: until the store has taken it, this is the connection's
// authoritative state, and the next refresh redeems its refresh token,
// never the store's older one. Its fields are guarded by the cache's lock.
type pendingWrite struct {
	// rec is what to write.
	rec record
	// cas is the record's version to write at: the one that carries this
	// process's lease.
	cas int
	// base is the refresh token the store held when this chain of
	// refreshes began: a record that still holds it was changed by
	// nobody but lease-takers, and may be written over.
	base string
	// triggers are the refreshes the write completes, reported once it
	// lands.
	triggers []string
	// unsure are hashes of the refresh tokens of the token sets this
	// chain has tried to write at pw.cas: the store may hold one of them
	// whatever the answer was (a time-out, a lost answer, a conflict met
	// by a retry of the write itself), which is then this chain's own
	// write (a refresh token the provider issued to this process), not
	// another replica's refresh.
	unsure []uint64
	// unanswered and unansweredAt are the hash of the refresh token
	// settle last failed to write, and when: for writeRetryMax after, the
	// refreshes from memory of that token do not wait for the store again.
	unanswered   uint64
	unansweredAt time.Time
}

// maxUnsure bounds pendingWrite.unsure. The first entry stays (an outage
// most often begins with the answer to a write that landed), then the
// latest ones.
const maxUnsure = 8

// unsureSeed hashes the refresh tokens in pendingWrite.unsure: a hash
// keeps a long outage's list small whatever the tokens' length.
var unsureSeed = maphash.MakeSeed()

func unsureHash(rt string) uint64 { return maphash.String(unsureSeed, rt) }

// mayHaveLanded notes that the write of rec is being tried: whatever its
// answer, the store may take it. The cache's lock must be held.
func (pw *pendingWrite) mayHaveLanded(rec record) {
	rt := rec.tok.RefreshToken
	if rt == "" || rt == pw.base {
		return
	}
	h := unsureHash(rt)
	if slices.Contains(pw.unsure, h) {
		return
	}
	if len(pw.unsure) == maxUnsure {
		pw.unsure = slices.Delete(pw.unsure, 1, 2)
	}
	pw.unsure = append(pw.unsure, h)
}

// Writer bounds: the first retry of a failed write, and the longest wait
// between retries, so a write lands within seconds of the store answering
// again.
const (
	writeRetryFirst = 500 * time.Millisecond
	writeRetryMax   = 5 * time.Second
	maxTriggers     = 32
)

// write tries once to write pw (resolving check-and-set conflicts). ok is
// false when the store failed and the write must be tried again; otherwise
// the outcome is final: the token set written, or the store's newer state.
func (k *Keeper) write(key Key, pw *pendingWrite) (tok Token, err error, ok bool) {
	for range 3 {
		// rec is noted before the Put: an attempt the store took can
		// still answer a conflict (a retry of it by the store's client,
		// or by failing over to another address) or nothing at all.
		k.cache.mu.Lock()
		rec, cas, base, triggers := pw.rec, pw.cas, pw.base, append([]string(nil), pw.triggers...)
		pw.mayHaveLanded(rec)
		k.cache.mu.Unlock()
		ctx, cancel := k.budget.storeCtx()
		v, err := k.store.Put(ctx, key.tokenPath(), rec.fields(), cas)
		cancel()
		if err == nil {
			if k.written(key, pw, rec, v, triggers) {
				// A refresh redeemed the token set being written and
				// put its successor in pw meanwhile: write that too,
				// over the version just written.
				continue
			}
			if rec.state != Active {
				return Token{}, ErrAuthorizationRequired, true
			}
			return rec.tok, nil, true
		}
		if !errors.Is(err, kv.ErrConflict) {
			return Token{}, err, false
		}
		cur, cv, err := k.peek(key)
		if err != nil {
			return Token{}, err, false
		}
		k.cache.mu.RLock()
		ours := cur.tok.RefreshToken != "" && slices.Contains(pw.unsure, unsureHash(cur.tok.RefreshToken))
		unmoved := pw.rec.tok.RefreshToken == cur.tok.RefreshToken // not refreshed from memory since
		k.cache.mu.RUnlock()
		switch {
		case ours && unmoved && cur.lease.heldBy(k.cache.holder, k.now(), k.budget.skew) && k.yieldTo(key, pw, cur.tok, cv):
			// This very set landed, and another replica has taken a
			// lease on it to refresh it: its successor will follow.
			return cur.tok, nil, true
		case cur.state != Active || cur.tok.Generation != rec.tok.Generation:
			// Disconnected, reconnected or imported meanwhile: this
			// token set belongs to a grant that is gone.
			k.log.Info("a refreshed token set belongs to a connection replaced meanwhile; discarding it",
				zap.String("connection", key.String()))
			k.drop(key, pw)
			r, v, err := k.read(key)
			if err == nil {
				k.remember(key, r.tok, v)
			}
			return r.tok, err, true
		case cur.tok.RefreshToken == base || ours:
			// Only a lease changed, or a write of this chain that was
			// reported failed landed after all: nobody else redeemed.
			// Its refresh token may be spent since (a refresh of the
			// unsaved set), so rec goes over it. (Should another
			// replica have taken a lease on that landed write and be
			// refreshing it, this is the store outage README.md says
			// no lease covers.)
			k.cache.mu.Lock()
			pw.cas, pw.base, pw.unsure = cv, cur.tok.RefreshToken, nil
			k.cache.mu.Unlock()
		default:
			k.log.Warn("another replica refreshed the connection too; using the token set in the store",
				zap.String("connection", key.String()))
			k.drop(key, pw)
			k.remember(key, cur.tok, cv)
			return cur.tok, nil, true
		}
	}
	return Token{}, kv.ErrConflict, false
}

// written records that rec, version v, is in the store. moved reports that
// pw changed while rec was written (a refresh of the unsaved token set
// rotated it again): pw then stays pending, at version v, for another
// write, as rec's refresh token is spent.
func (k *Keeper) written(key Key, pw *pendingWrite, rec record, v int, triggers []string) (moved bool) {
	now := k.now()
	mine := false
	k.cache.update(key, func(e *entry) {
		if e.pending != pw && (e.pending != nil || e.version > v) {
			// Another set to write, or the connection changed here
			// (a disconnect, a reconnect) once rec had landed.
			return
		}
		if e.pending == pw && (pw.rec.tok.RefreshToken != rec.tok.RefreshToken || pw.rec.tok.AccessToken != rec.tok.AccessToken) {
			pw.cas, pw.base, pw.unsure, moved = v, rec.tok.RefreshToken, nil, true
			return
		}
		mine = true
		e.pending, e.version, e.checkedAt = nil, v, now
		if rec.state != Active {
			e.tok, e.missingAt, e.lastErr, e.lastErrAt = Token{}, now, rec.reason, rec.since
			return
		}
		e.tok, e.missingAt = rec.tok, time.Time{}
	})
	if !mine || rec.state != Active {
		return
	}
	k.succeeded(key)
	for _, t := range triggers {
		k.obs.Refreshed(key, t, "ok")
	}
	k.log.Info("token refreshed", zap.String("connection", key.String()),
		zap.Time("expiry", rec.tok.Expiry), zap.Bool("rotated", rec.tok.RefreshToken != pw.base))
	return false
}

// settle tries, before a refresh redeems pw's refresh token from memory,
// to write pw, if a write of it was tried already: the store may hold it
// then, with no lease, where another replica could redeem the same refresh
// token. It reports whether the store answered (pw written, or the store's
// newer state taken); the refresh then goes through the store and its
// lease like any other. If the store does not answer, the refresh from
// memory goes ahead (and those of the same refresh token in the next
// writeRetryMax do not wait for the store again): that is the store outage
// README.md says no lease covers.
func (k *Keeper) settle(j job, pw *pendingWrite) bool {
	now := k.now()
	k.cache.mu.RLock()
	h := unsureHash(pw.rec.tok.RefreshToken)
	// A scoped token request (no want) always redeems.
	try := slices.Contains(pw.unsure, h) && (j.want == nil || j.want(pw.rec.tok, now)) &&
		(h != pw.unanswered || now.Sub(pw.unansweredAt) >= writeRetryMax)
	k.cache.mu.RUnlock()
	if !try {
		return false
	}
	key := j.key
	_, _, ok := k.cache.writeVia.Load().write(key, pw)
	if !ok {
		k.cache.mu.Lock()
		pw.unanswered, pw.unansweredAt = h, now
		k.cache.mu.Unlock()
	}
	return ok
}

// yieldTo gives up pw for tok, the store's version v of the same token
// set, if pw is still the connection's pending write and still holds that
// set (not refreshed from memory since), in one step; it reports whether
// it did.
func (k *Keeper) yieldTo(key Key, pw *pendingWrite, tok Token, v int) bool {
	yielded := false
	k.cache.update(key, func(e *entry) {
		if e.pending != pw || pw.rec.tok.RefreshToken != tok.RefreshToken {
			return
		}
		yielded = true
		e.pending, e.tok, e.version, e.missingAt, e.checkedAt = nil, tok, v, time.Time{}, k.now()
	})
	return yielded
}

// drop forgets pw if it is still the connection's pending write.
func (k *Keeper) drop(key Key, pw *pendingWrite) {
	k.cache.update(key, func(e *entry) {
		if e.pending == pw {
			e.pending = nil
			e.version = 0 // whatever the store holds is newer
		}
	})
}

// peek reads the connection's record without touching the cache. A missing
// record reads as a tombstone.
func (k *Keeper) peek(key Key) (record, int, error) {
	ctx, cancel := k.budget.storeCtx()
	defer cancel()
	e, err := k.store.Get(ctx, key.tokenPath())
	if errors.Is(err, kv.ErrNotFound) {
		return record{state: Disconnected}, e.Version, nil
	}
	if err != nil {
		return record{}, 0, err
	}
	rec, err := parseRecord(e.Data)
	return rec, e.Version, err
}

// startWriter keeps trying to write pw until the store takes it, the
// connection is replaced (a reconnect or disconnect here), or the cache is
// closed. Each try goes through the latest configuration's Keeper
// (TakeOverWrites).
func (k *Keeper) startWriter(key Key, pw *pendingWrite) {
	k.cache.writers.Add(1)
	go func() {
		defer k.cache.writers.Done()
		wait := writeRetryFirst
		for {
			t := time.NewTimer(wait)
			select {
			case <-k.cache.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if e, _ := k.cache.get(key); e.pending != pw {
				return
			}
			w := k.cache.writeVia.Load() // the latest configuration's store
			_, err, ok := w.write(key, pw)
			if ok {
				return
			}
			w.log.Warn("the store still does not take a refreshed token set; retrying",
				zap.String("connection", key.String()), errField(err))
			wait = min(wait*2, writeRetryMax)
		}
	}()
}

// refreshUnsaved refreshes a connection whose latest token set the store
// has not taken yet, with that set's refresh token and no store request
// (the store may be down). It takes no lease: that refresh token was
// issued to this process alone, this process runs one job per connection,
// and a write of it that may have landed was settled first where the
// store answered (settle), so no other replica holds it.
func (k *Keeper) refreshUnsaved(j job, pw *pendingWrite) (Token, error) {
	k.cache.mu.RLock()
	rec := pw.rec
	k.cache.mu.RUnlock()
	tok, now := rec.tok, k.now()
	switch {
	case rec.state != Active:
		return Token{}, ErrAuthorizationRequired
	case !j.want(tok, now):
		return tok, nil
	case !tok.Refreshable(now):
		if tok.Usable(now) {
			return tok, nil
		}
		return Token{}, ErrAuthorizationRequired
	}
	e, _ := k.cache.get(j.key)
	if err := k.blocked(j.key, e, j.r, now, j.force, true); err != nil {
		return k.serveUnsaved(tok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.budget.token)
	ot, err := j.r.Refresh(ctx, tok.RefreshToken)
	cancel()
	now = k.now()
	if err == nil {
		next := fromResponse(j.r, ot, tok, now)
		return k.carry(j, pw, tok, func(Token) Token { return next })
	}
	switch connector.ClassOf(err) {
	case connector.GrantRejected:
		reason := "the provider rejected the refresh token (" + providerCode(err) + "); authorize again"
		k.cache.update(j.key, func(e *entry) {
			if e.pending != pw {
				return
			}
			pw.rec = record{tok: Token{Generation: tok.Generation, ConnectedAt: tok.ConnectedAt, ConnectedBy: tok.ConnectedBy},
				state: NeedsAuthorization, reason: reason, since: now}
			e.tok, e.missingAt, e.lastErr, e.lastErrAt = Token{}, now, reason, now
		})
		k.obs.Refreshed(j.key, j.trigger, "invalid_grant")
		return Token{}, ErrAuthorizationRequired
	case connector.ClientRejected:
		k.obs.Refreshed(j.key, j.trigger, "misconfigured")
		wait := k.clientRefused(j.key, j.r, providerCode(err))
		return k.serveUnsaved(tok, &UnavailableError{RetryAfter: wait, Err: errors.Join(ErrMisconfigured, err)})
	}
	k.obs.Refreshed(j.key, j.trigger, "transient")
	wait := k.failed(j.key, connector.RetryAfterOf(err), "refresh failed temporarily; will retry")
	return k.serveUnsaved(tok, &UnavailableError{RetryAfter: wait, Err: err})
}

// carry keeps the token set obtained by redeeming the refresh token of
// redeemed, pw's token set; change makes it from the connection's current
// one. While pw is pending, it goes into pw. If the store took pw
// meanwhile, the store holds the refresh token just redeemed, which a
// rotating provider no longer honours: the new set follows it there as a
// write of its own, or the connection would be lost at its next refresh.
func (k *Keeper) carry(j job, pw *pendingWrite, redeemed Token, change func(Token) Token) (Token, error) {
	kept := false
	// At version 0 when the cache cannot say which version holds
	// redeemed: the write's check-and-set then fails, and it asks the
	// store, which also tells a connection replaced meanwhile.
	follow := &pendingWrite{rec: record{tok: change(redeemed)}, base: redeemed.RefreshToken, triggers: []string{j.trigger}}
	k.cache.updateCached(j.key, func(e *entry) {
		switch {
		case e.pending == pw:
			pw.rec.tok = change(pw.rec.tok)
			if len(pw.triggers) < maxTriggers {
				pw.triggers = append(pw.triggers, j.trigger)
			}
			e.tok, e.failures, e.retryAt = pw.rec.tok, 0, time.Time{}
			follow.rec.tok, kept = pw.rec.tok, true
		case e.pending == nil && e.version > 0 &&
			e.tok.Generation == redeemed.Generation && e.tok.RefreshToken == redeemed.RefreshToken:
			// Pending from now on, so that a refresh meanwhile
			// redeems the new refresh token, not the spent one.
			follow.rec.tok, follow.cas = change(e.tok), e.version
			e.pending, e.tok, e.failures, e.retryAt = follow, follow.rec.tok, 0, time.Time{}
		}
	})
	if kept {
		return follow.rec.tok, nil
	}
	return k.commit(j, follow)
}

func (k *Keeper) serveUnsaved(tok Token, err error) (Token, error) {
	if tok.Usable(k.now()) {
		return tok, nil
	}
	return Token{}, err
}
