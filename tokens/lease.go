package tokens

import (
	"context"
	"errors"
	"time"
)

// The refresh lease says, inside the connection's token record, which
// replica is refreshing it and until when. It is taken with a check-and-set
// write of the record at the version read, and given back by the write of
// the new token set (or by a write that clears it), so a refresh costs three
// store requests: read, take, write.
//
// The invariant it keeps: a refresh token is never redeemed twice by
// replicas sharing a store. A replica redeems only while it holds a live
// lease, and the lease outlives everything the holder does under it: the
// token request (bounded by the token timeout), the store write that
// follows (bounded by the store timeout) and the skew between replicas'
// clocks, which others add to the lease's expiry before they treat it as
// over. Right before the token request the holder checks that the time left
// still covers the request and the write, and renews the lease (one more
// check-and-set write) when it does not.
//
// What it cannot cover: a store unreachable for longer than the lease right
// after a rotation, with another replica needing the same connection as the
// store comes back, before this replica's pending write lands.

// budget holds the time bounds the lease is built from.
type budget struct {
	store time.Duration // one store request
	token time.Duration // one token request
	skew  time.Duration // clock disagreement between replicas
	lease time.Duration // how long a lease lasts
}

func newBudget(store, token, skew time.Duration) budget {
	b := budget{store: store, token: token, skew: skew}
	if b.store <= 0 {
		b.store = 5 * time.Second
	}
	if b.token <= 0 {
		b.token = 30 * time.Second
	}
	if b.skew <= 0 {
		b.skew = 5 * time.Second
	}
	// The token request, the write after it and both replicas' skew, with
	// a store request's worth of slack for the take itself.
	b.lease = b.token + 2*b.store + 2*b.skew
	return b
}

// storeCtx bounds one store request on a context of its own: no request or
// reload cancels it.
func (b budget) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.store)
}

// storeCtxFrom bounds one store request made for ctx's caller.
func (b budget) storeCtxFrom(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.store)
}

// redeemBy returns the latest time a token request under a lease that
// lasts until may end: the write after it and the skew must still fit.
func (b budget) redeemBy(until time.Time) time.Time {
	return until.Add(-b.store - b.skew)
}

var errLeaseLost = errors.New("the refresh lease changed hands")

// takeLease writes the lease into the connection's record, read at version,
// and returns the lease and the version that carries it.
func (k *Keeper) takeLease(key Key, rec record, version int) (lease, int, error) {
	l := lease{holder: k.cache.holder, until: k.now().Add(k.budget.lease)}
	rec.lease = l
	ctx, cancel := k.budget.storeCtx()
	defer cancel()
	v, err := k.store.Put(ctx, key.tokenPath(), rec.fields(), version)
	return l, v, err
}

// ensureLease makes sure the lease leaves time for a token request and the
// write after it, renewing it once if it does not. It returns the lease and
// the record version to write at.
func (k *Keeper) ensureLease(key Key, rec record, l lease, version int) (lease, int, error) {
	if k.budget.redeemBy(l.until).Sub(k.now()) >= k.budget.token {
		return l, version, nil
	}
	l, v, err := k.takeLease(key, rec, version)
	if err != nil {
		return lease{}, 0, err
	}
	if k.budget.redeemBy(l.until).Sub(k.now()) < k.budget.token {
		// The store is so slow that renewing ate the time it gave.
		return lease{}, 0, errLeaseLost
	}
	return l, v, nil
}

// releaseLease clears the lease when no new token set was obtained; a
// conflict means the record changed, which freed it too.
func (k *Keeper) releaseLease(key Key, rec record, version int) {
	rec.lease = lease{}
	ctx, cancel := k.budget.storeCtx()
	defer cancel()
	if _, err := k.store.Put(ctx, key.tokenPath(), rec.fields(), version); err != nil {
		k.log.Debug("releasing the refresh lease", errField(err))
	}
}
