package tokens

import (
	"context"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// KeepAliveRate is how many connections per second a keep-alive pass
// examines at most, so a store with many connections is not flooded.
const KeepAliveRate = 20

// KeepAlive refreshes, in the background, connector's connections that have
// not obtained a token set for idle (providers expire refresh tokens that
// go unused: Microsoft after 90 days, for example), until ctx ends. It looks
// at every connection in the store (the shared one and the per-user ones),
// whichever replica they were used on, every quarter of idle (the first pass
// soon after it starts); the lease keeps replicas from refreshing the same
// connection, and a refreshed connection is not idle for the others.
func (k *Keeper) KeepAlive(ctx context.Context, connector string, r Refresher, p Policy, idle time.Duration) {
	if idle <= 0 {
		return
	}
	every := idle / 4
	first := time.Duration(rand.Int64N(int64(min(every, 30*time.Second)) + 1))
	t := time.NewTimer(first)
	defer t.Stop()
	lim := rate.NewLimiter(KeepAliveRate, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := k.keepAlivePass(ctx, connector, r, p, idle, lim)
		if err != nil && ctx.Err() == nil {
			k.log.Warn("keep-alive pass", zap.String("connector", connector), errField(err))
		}
		if n > 0 {
			k.log.Info("refreshed idle connections", zap.String("connector", connector), zap.Int("refreshed", n))
		}
		t.Reset(every)
	}
}

// keepAlivePass examines every connection of connector once and returns
// how many it refreshed.
func (k *Keeper) keepAlivePass(ctx context.Context, connector string, r Refresher, p Policy, idle time.Duration, lim *rate.Limiter) (int, error) {
	keys := []Key{{Connector: connector}}
	subjects, err := k.Subjects(ctx, connector)
	for _, s := range subjects {
		keys = append(keys, Key{Connector: connector, Subject: s})
	}
	idleSince := func(t Token, now time.Time) bool { return now.Sub(t.lastRefresh()) >= idle }
	n := 0
	for _, key := range keys {
		if err := lim.Wait(ctx); err != nil {
			return n, err
		}
		rec, _, rerr := k.peek(key)
		if rerr != nil || rec.state != Active || !rec.tok.Refreshable(k.now()) || !idleSince(rec.tok, k.now()) {
			continue
		}
		j := job{key: key, r: r, p: p, trigger: "keepalive", want: idleSince}
		_, err, _ := k.cache.flight.Do(key.String(), func() (any, error) { return k.run(j) })
		if err == nil {
			n++
		}
	}
	return n, err
}
