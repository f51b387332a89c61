package tokens

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAccessDecidesAsToken: Access, the proxy's per-request lookup, answers
// a fresh token from the cache without a store read, a refresh or an
// allocation, and otherwise does what Token does: a token due for refresh
// is refreshed in the background, a connection due for revalidation is
// read again from the store, a missing one needs authorization.
func TestAccessDecidesAsToken(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	st := &countingStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	if _, err := k.Access(ctx, demo, r, policy); !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("missing connection: %v, want ErrAuthorizationRequired", err)
	}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	want := func(at string) {
		t.Helper()
		a, err := k.Access(ctx, demo, r, policy)
		if err != nil || a.Token != at || a.Authorization != "Bearer "+at {
			t.Fatalf("Access = %+v, %v; want %s", a, err, at)
		}
	}

	// Fresh: the cache alone, marked used, nothing allocated.
	want("at-0")
	k.cache.lookup(demo).used.Store(0)
	gets := st.gets.Load()
	if n := testing.AllocsPerRun(1000, func() { want("at-0") }); n != 0 {
		t.Errorf("a fresh token cost %v allocations", n)
	}
	if k.cache.lookup(demo).used.Load() != 1 {
		t.Error("Access did not mark the connection used")
	}
	if st.gets.Load() != gets || r.count() != 0 {
		t.Fatalf("a fresh token cost %d store reads and %d refreshes", st.gets.Load()-gets, r.count())
	}

	// Past the revalidation interval: one read of the record, in the
	// background, and the token still served.
	clk.Add(DefaultRevalidate + time.Second)
	want("at-0")
	eventually(t, "the revalidation's store read", func() bool { return st.gets.Load() > gets })
	k.Wait()
	gets = st.gets.Load()
	want("at-0")
	if st.gets.Load() != gets {
		t.Errorf("a revalidated connection was read again: %d reads", st.gets.Load()-gets)
	}

	// Within the refresh margin: served while one refresh runs.
	clk.Add(time.Hour - DefaultRevalidate - 2*time.Minute)
	want("at-0")
	k.Wait()
	if r.count() != 1 {
		t.Fatalf("%d refreshes, want 1", r.count())
	}
	want("at-1")
}

// TestAccessOf: the Authorization value is the token's, as Bearer.
func TestAccessOf(t *testing.T) {
	md := NewMetadata(map[string]string{"tenant": "contoso"})
	a := AccessOf(Token{AccessToken: "at", Metadata: md})
	if a.Token != "at" || a.Authorization != "Bearer at" || a.Metadata != md {
		t.Fatalf("AccessOf = %+v", a)
	}
}
