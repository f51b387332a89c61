package tokens

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
)

// BenchmarkTokenHot is the proxy's per-request token lookup (Access) with a
// fresh cached token, from parallel goroutines (run it with -cpu 1,2,4,8,16):
// one-key is every request for the shared connection (one entry, read by
// all), many-keys spreads the requests over 10,000 per-user connections.
func BenchmarkTokenHot(b *testing.B) {
	for _, n := range []int{1, 10_000} {
		name := "one-key"
		if n > 1 {
			name = "many-keys"
		}
		b.Run(name, func(b *testing.B) { benchTokenHot(b, n) })
	}
}

func benchTokenHot(b *testing.B, n int) {
	st, _ := filestore.New(b.TempDir(), bytes.Repeat([]byte{1}, filestore.KeySize))
	k := NewKeeper(Options{Store: st})
	keys := make([]Key, n)
	ot := &oauth2.Token{AccessToken: "ory_at_x", RefreshToken: "ory_rt_x", Expiry: time.Now().Add(time.Hour)}
	for i := range keys {
		keys[i] = Key{Connector: "demo"}
		if n > 1 {
			keys[i].Subject = "user-" + strconv.Itoa(i)
		}
		// Cached as a read would leave it, without writing n records.
		k.cache.update(keys[i], func(e *entry) {
			*e = entry{tok: FromOAuth2(ot, Token{}, time.Now()), version: 1, checkedAt: time.Now()}
		})
	}
	// Requests come in no particular order: not in the order the
	// connections were cached (and laid out in memory).
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	p := Policy{Margin: 5 * time.Minute, Cooldown: 30 * time.Second}
	var next atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := int(next.Add(7919))
		for pb.Next() {
			i++
			if _, err := k.Access(ctx, keys[i%n], nil, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCacheEvict inserts connections into a full cache of a
// million, of which every other one was used since the last pass: each
// insertion past the bound makes room first, and the pass that runs then
// visits every connection and drops the unused ones (half). ns/evicted is
// the time per connection dropped, the insertions' own cost included;
// ns/op over b.N insertions spreads the passes over them.
func BenchmarkCacheEvict(b *testing.B) {
	const size = 1_000_000
	tok := FromOAuth2(&oauth2.Token{AccessToken: "ory_at_x", RefreshToken: "ory_rt_x", Expiry: time.Now().Add(time.Hour)}, Token{}, time.Now())
	fill := func(e *entry) { *e = entry{tok: tok, version: 1, checkedAt: time.Now()} }
	c := NewBoundedCache(size)
	for i := range size {
		k := Key{Connector: "demo", Subject: "user-" + strconv.Itoa(i)}
		c.update(k, fill)
		if i%2 == 0 {
			c.get(k)
		}
	}
	keys := make([]Key, b.N)
	for i := range keys {
		keys[i] = Key{Connector: "demo", Subject: "new-" + strconv.Itoa(i)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, k := range keys {
		c.update(k, fill)
	}
	b.StopTimer()
	if evicted := size + b.N - c.Len(); evicted > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(evicted), "ns/evicted")
	}
}
