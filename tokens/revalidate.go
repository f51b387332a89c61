package tokens

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// maybeRevalidate reads the connection's record again, in the background,
// when the cached copy was last compared with the store more than the
// policy's interval ago. The first request after the interval claims the
// read, so a connection costs at most one store read per interval however
// busy it is, and no request waits for it. At most MaxConcurrentRefreshes
// such reads of a connector run at once, so that many connections coming
// due for revalidation together (a wave, or a cache filled at once) do not
// flood the store.
func (k *Keeper) maybeRevalidate(key Key, e entry, p Policy, now time.Time) {
	every := p.revalidate()
	if every < 0 || e.pending != nil || now.Sub(e.checkedAt) < every {
		return
	}
	claimed := false
	k.cache.update(key, func(en *entry) {
		if now.Sub(en.checkedAt) >= every {
			en.checkedAt, claimed = now, true
		}
	})
	if !claimed {
		return
	}
	g := k.gate(key.Connector)
	if !g.tryRevalidate(p.maxConcurrentRefreshes()) {
		// As many reads of the connector's records already run: give
		// the claim back, a later request tries again.
		k.cache.updateCached(key, func(en *entry) {
			if en.checkedAt.Equal(now) {
				en.checkedAt = e.checkedAt
			}
		})
		return
	}
	k.bgWork.Add(1)
	go func() {
		defer k.bgWork.Done()
		defer g.revalidated()
		k.revalidate(key)
	}()
}

// revalidate compares the cached connection with the store's record and
// takes the store's when it differs: a disconnect, reconnect, import or
// another replica's refresh. A store failure keeps the cached copy (the
// hot path never depends on the store). A read that the connection's
// changing here overtook is made once more, so that the interval still
// bounds how stale the cache can be.
func (k *Keeper) revalidate(key Key) {
	for range 2 {
		if k.compare(key) {
			return
		}
	}
}

// compare is one revalidation read. It reports false if its result was
// dropped: the cached entry changed while the read was under way.
func (k *Keeper) compare(key Key) bool {
	seen := k.cache.lookup(key)
	if seen == nil {
		return true // dropped from the cache meanwhile: nothing to compare
	}
	ctx, cancel := k.budget.storeCtx()
	defer cancel()
	se, err := k.store.Get(ctx, key.tokenPath())
	now := k.now()
	var rec record
	switch {
	case errors.Is(err, kv.ErrNotFound):
		rec = record{state: Disconnected, reason: "the connection's record is gone"}
	case err != nil:
		k.log.Debug("revalidating a cached connection", zap.String("connection", key.String()), errField(err))
		return true
	default:
		if rec, err = parseRecord(se.Data); err != nil {
			k.log.Warn("revalidating a cached connection", zap.String("connection", key.String()), errField(err))
			return true
		}
	}
	return k.cache.updateIfSame(key, seen, func(e *entry) {
		if e.pending != nil || (se.Version == e.version && rec.tok.Generation == e.tok.Generation) {
			return
		}
		// Any other version wins, older ones too: a record deleted by
		// hand and written again starts from version 1. (A version
		// older because this process changed the record while the read
		// was under way never gets here: updateIfSame drops it.)
		if rec.state != Active {
			if e.missingAt.IsZero() {
				k.log.Info("connection ended elsewhere; no longer attaching its token", zap.String("connection", key.String()))
			}
			e.tok, e.version, e.missingAt, e.lastErr, e.lastErrAt = Token{}, se.Version, now, rec.reason, rec.since
			return
		}
		e.tok, e.version, e.missingAt = rec.tok, se.Version, time.Time{}
	})
}
