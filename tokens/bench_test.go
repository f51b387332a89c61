package tokens

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
)

// BenchmarkTokenHot is the proxy's per-request token lookup with a fresh
// cached token.
func BenchmarkTokenHot(b *testing.B) {
	st, _ := filestore.New(b.TempDir(), bytes.Repeat([]byte{1}, filestore.KeySize))
	k := NewKeeper(Options{Store: st})
	key := Key{Connector: "demo"}
	if _, err := k.Save(context.Background(), key, &oauth2.Token{AccessToken: "ory_at_x", RefreshToken: "ory_rt_x", Expiry: time.Now().Add(time.Hour)}, ""); err != nil {
		b.Fatal(err)
	}
	p := Policy{Margin: 5 * time.Minute, Cooldown: 30 * time.Second}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := k.Token(ctx, key, nil, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
