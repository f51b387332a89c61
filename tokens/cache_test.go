package tokens

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestPackRoundTrip checks that an entry comes out of the cache as it went
// in: every string, every time (the zero time, the Unix epoch, times
// beyond what nanoseconds count, clamped) and the refresh bookkeeping.
func TestPackRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 123456789)
	pw := &pendingWrite{}
	in := entry{
		tok: Token{AccessToken: "at", RefreshToken: "rt-longer", TokenType: "bearer", Scope: "openid offline_access",
			Expiry: now, RefreshExpiry: time.Unix(0, 0), ObtainedAt: now.Add(-time.Hour), ConnectedBy: "alice@example.com",
			Generation: "0123456789abcdef01234567", Metadata: NewMetadata(map[string]string{"instance_url": "https://acme.my.salesforce.com"})},
		version: 7, checkedAt: now,
		refreshing: true, forcedEnd: now, failures: 2, retryAt: now.Add(time.Second), pending: pw,
		lastErr: "boom", lastErrAt: now,
	}
	out := roundTrip(&in)
	if v, _ := out.tok.Metadata.Get("instance_url"); v != "https://acme.my.salesforce.com" {
		t.Errorf("metadata instance_url = %q", v)
	}
	for _, c := range []struct {
		name      string
		got, want time.Time
	}{
		{"expiry", out.tok.Expiry, in.tok.Expiry}, {"epoch", out.tok.RefreshExpiry, in.tok.RefreshExpiry},
		{"obtained", out.tok.ObtainedAt, in.tok.ObtainedAt}, {"checked", out.checkedAt, in.checkedAt},
		{"forcedEnd", out.forcedEnd, in.forcedEnd}, {"retryAt", out.retryAt, in.retryAt},
	} {
		if !c.got.Equal(c.want) || c.got.IsZero() {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if !out.tok.ConnectedAt.IsZero() || !out.missingAt.IsZero() {
		t.Errorf("zero times came back as %v and %v", out.tok.ConnectedAt, out.missingAt)
	}
	ot, it := out.tok, in.tok
	ot.Expiry, ot.RefreshExpiry, ot.ObtainedAt, ot.ConnectedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	it.Expiry, it.RefreshExpiry, it.ObtainedAt, it.ConnectedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if ot != it {
		t.Errorf("token = %+v, want %+v", ot, it)
	}
	if out.version != 7 || !out.refreshing || out.failures != 2 || out.pending != pw || out.lastErr != "boom" {
		t.Errorf("bookkeeping = %+v", out)
	}
	far := entry{tok: Token{Expiry: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), RefreshExpiry: time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC)}}
	got := roundTrip(&far)
	if !got.tok.Expiry.After(time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)) || got.tok.RefreshExpiry.IsZero() || !got.tok.RefreshExpiry.Before(time.Date(1700, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("out-of-range times came back as %v and %v", got.tok.Expiry, got.tok.RefreshExpiry)
	}
	if p := pack(&entry{tok: Token{AccessToken: "a"}}, nil); p.cold != nil {
		t.Error("an entry without bookkeeping has a cold part")
	}
}

// TestCacheTable fills the table past several growths, forgets and
// evicts, and checks that each connection is found with its own entry and
// that the count follows.
func TestCacheTable(t *testing.T) {
	c := NewBoundedCache(1000)
	key := func(i int) Key { return Key{Connector: "c", Subject: "u" + strconv.Itoa(i)} }
	for i := range 1000 {
		c.update(key(i), func(e *entry) { e.tok.AccessToken, e.version = "t"+strconv.Itoa(i), i })
	}
	if c.Len() != 1000 {
		t.Fatalf("Len = %d, want 1000", c.Len())
	}
	for i := range 1000 {
		e, ok := c.get(key(i))
		if !ok || e.tok.AccessToken != "t"+strconv.Itoa(i) || e.version != i {
			t.Fatalf("entry %d = %+v, %v", i, e, ok)
		}
	}
	c.forget(key(3))
	c.update(key(4), func(e *entry) { e.refreshing = true })
	c.forget(key(4))
	if _, ok := c.get(key(3)); ok || c.Len() != 999 {
		t.Fatalf("after forget: found %v, Len %d", ok, c.Len())
	}
	if _, ok := c.get(key(4)); !ok {
		t.Fatal("a connection being refreshed was forgotten")
	}
	// All were used (read above): the first pass spares them and clears
	// their marks; the second drops until a tenth is free, never the one
	// being refreshed. Then 50 more fit without another pass.
	c.update(key(1000), func(*entry) {})
	c.update(key(1001), func(*entry) {})
	if n := c.Len(); n != 901 {
		t.Fatalf("Len after eviction = %d, want 901", n)
	}
	if _, ok := c.get(key(4)); !ok {
		t.Fatal("a connection being refreshed was evicted")
	}
	seen := 0
	c.Each(func(ConnectionState) { seen++ })
	if seen != 901 {
		t.Fatalf("Each saw %d", seen)
	}
}

// TestCacheConcurrentReaders reads while a writer grows, updates and
// evicts the table (run with -race): every read finds a consistent entry.
func TestCacheConcurrentReaders(t *testing.T) {
	c := NewBoundedCache(500)
	key := func(i int) Key { return Key{Connector: "c", Subject: strconv.Itoa(i)} }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if e, ok := c.get(key(i % 2000)); ok && e.tok.AccessToken != "t"+strconv.Itoa(e.version) {
					t.Errorf("inconsistent entry %+v", e)
					return
				}
			}
		}()
	}
	for round := range 5 {
		for i := range 2000 {
			v := i + round*2000
			c.update(key(i), func(e *entry) { e.tok.AccessToken, e.version = "t"+strconv.Itoa(v), v })
		}
	}
	close(stop)
	wg.Wait()
	if n := c.Len(); n > 500 {
		t.Fatalf("Len = %d, over the bound", n)
	}
}

func roundTrip(e *entry) entry {
	p := pack(e, nil)
	return p.unpack()
}
