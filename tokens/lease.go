package tokens

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// A lease is a short-lived record in the store that says which replica is
// refreshing a connection. It is taken and given back with check-and-set
// writes, so two replicas sharing a store never refresh the same connection
// at once; its expiry frees it if the holder dies. The token write that
// follows a refresh is itself a check-and-set write at the version read after
// taking the lease, which fences a holder whose lease ran out.
type lease struct {
	path    string
	holder  string
	version int
}

var errLeaseHeld = errors.New("another replica is refreshing this connection")

func newHolder() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tryLease takes the lease on key, or returns errLeaseHeld while somebody
// else's lease is live.
func (k *Keeper) tryLease(ctx context.Context, key Key) (*lease, error) {
	p := key.leasePath()
	now := k.now()
	e, err := k.store.Get(ctx, p)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return nil, err
	}
	if err == nil && e.Data["holder"] != "" {
		if until, perr := time.Parse(time.RFC3339Nano, e.Data["until"]); perr == nil && now.Before(until) {
			return nil, errLeaseHeld
		}
	}
	l := &lease{path: p, holder: newHolder()}
	v, err := k.store.Put(ctx, p, map[string]string{
		"holder": l.holder,
		"until":  now.Add(k.leaseTTL).UTC().Format(time.RFC3339Nano),
	}, e.Version)
	if errors.Is(err, kv.ErrConflict) {
		return nil, errLeaseHeld
	}
	if err != nil {
		return nil, err
	}
	l.version = v
	return l, nil
}

// release gives the lease back. A conflict means it ran out and somebody
// else took it: nothing to give back.
func (k *Keeper) release(ctx context.Context, l *lease) {
	_, err := k.store.Put(ctx, l.path, map[string]string{"holder": "", "until": ""}, l.version)
	if err != nil && !errors.Is(err, kv.ErrConflict) {
		k.log.Warn("releasing refresh lease", errField(err))
	}
}
