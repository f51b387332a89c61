package tokens

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// heldRefresher is a token endpoint whose every answer waits for the test
// to release it; it counts the requests in flight and the most at once.
type heldRefresher struct {
	now     func() time.Time
	release chan struct{}
	n       atomic.Int64
	mu      sync.Mutex
	flying  int
	most    int
	order   []string
}

func (r *heldRefresher) Refresh(_ context.Context, rt string) (*oauth2.Token, error) {
	r.mu.Lock()
	r.flying++
	r.most = max(r.most, r.flying)
	r.order = append(r.order, rt)
	r.mu.Unlock()
	<-r.release
	r.mu.Lock()
	r.flying--
	r.mu.Unlock()
	n := r.n.Add(1)
	return &oauth2.Token{AccessToken: fmt.Sprint("at-new-", n), RefreshToken: fmt.Sprint("rt-new-", n), Expiry: r.now().Add(time.Hour)}, nil
}

func (r *heldRefresher) RefreshScoped(ctx context.Context, rt string, _ []string) (*oauth2.Token, error) {
	return r.Refresh(ctx, rt)
}

func (r *heldRefresher) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flying
}

func user(i int) Key { return Key{Connector: "demo", Subject: fmt.Sprint("user-", i)} }

func seedUser(t *testing.T, k *Keeper, i int, expiry time.Time) {
	t.Helper()
	ot := &oauth2.Token{AccessToken: fmt.Sprint("at-", i), RefreshToken: fmt.Sprint("rt-", i), Expiry: expiry}
	if _, err := k.Save(context.Background(), user(i), ot, "alice"); err != nil {
		t.Fatal(err)
	}
}

// A wave of expired connections is refreshed at most MaxConcurrentRefreshes
// at a time, however many requests wait for them, and every one is.
func TestRefreshWaveIsBounded(t *testing.T) {
	boundedWave(t, 50, 2*time.Hour, func(k *Keeper, i int, r *heldRefresher, p Policy) bool {
		tok, err := k.Token(context.Background(), user(i), r, p)
		return err == nil && tok.AccessToken != fmt.Sprint("at-", i)
	})
}

// A wave of tokens for another resource (scoped refreshes) is bounded by
// MaxConcurrentRefreshes as the connections' own refreshes are, and every
// request gets its token. The connections' own tokens are fresh.
func TestScopedWaveIsBounded(t *testing.T) {
	boundedWave(t, 30, 0, func(k *Keeper, i int, r *heldRefresher, p Policy) bool {
		tok, err := k.TokenFor(context.Background(), user(i), r, p, sharepoint)
		return err == nil && tok.AccessToken != ""
	})
}

// boundedWave seeds n connections with tokens that live an hour, lets
// later pass, then runs ask for each connection at once with
// MaxConcurrentRefreshes 2, answers the token requests one at a time,
// and fails unless at most 2 were in flight, each ask got a new token (ask
// says so) and each made one token request.
func boundedWave(t *testing.T, n int, later time.Duration, ask func(k *Keeper, i int, r *heldRefresher, p Policy) bool) {
	t.Helper()
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	t.Cleanup(k.Wait)
	for i := range n {
		seedUser(t, k, i, clk.Now().Add(time.Hour))
	}
	clk.Add(later)
	r := &heldRefresher{now: clk.Now, release: make(chan struct{})}
	t.Cleanup(func() { close(r.release) }) // before the Keeper's Wait: a failed test ends
	p := policy
	p.MaxConcurrentRefreshes, p.MaxWait = 2, time.Hour
	var wg sync.WaitGroup
	var got atomic.Int64
	for i := range n {
		wg.Go(func() {
			if ask(k, i, r, p) {
				got.Add(1)
			}
		})
	}
	for range n {
		eventually(t, "a token request to arrive", func() bool { return r.inFlight() > 0 })
		r.release <- struct{}{}
	}
	wg.Wait()
	if r.most > 2 || got.Load() != int64(n) || r.n.Load() != int64(n) {
		t.Fatalf("%d token requests at most in flight, %d of %d requests got a new token after %d token requests; want at most 2, %d, %d",
			r.most, got.Load(), n, r.n.Load(), n, n)
	}
}

// Queued refreshes run in the order their connections fall due, not in the
// order they were asked for.
func TestQueuedRefreshesRunByDueTime(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	t.Cleanup(k.Wait)
	// user-0 takes the only slot; 1..5 are asked for latest-due first.
	for i := range 6 {
		seedUser(t, k, i, clk.Now().Add(time.Hour-time.Duration(i)*10*time.Second))
	}
	clk.Add(56 * time.Minute) // all due (5 min margin), none expired
	r := &heldRefresher{now: clk.Now, release: make(chan struct{})}
	t.Cleanup(func() { close(r.release) }) // before k.Wait: a failed test ends
	p := policy
	p.MaxConcurrentRefreshes = 1
	if _, err := k.Token(context.Background(), user(0), r, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first refresh to start", func() bool { return r.inFlight() == 1 })
	g := k.gate("demo")
	for i := 1; i <= 5; i++ {
		if _, err := k.Token(context.Background(), user(i), r, p); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the refresh to queue", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == i })
	}
	for range 6 {
		eventually(t, "a token request to arrive", func() bool { return r.inFlight() > 0 })
		r.release <- struct{}{}
	}
	k.Wait()
	want := []string{"rt-0", "rt-5", "rt-4", "rt-3", "rt-2", "rt-1"}
	if fmt.Sprint(r.order) != fmt.Sprint(want) {
		t.Fatalf("refresh tokens redeemed in the order %v; want %v (soonest due first)", r.order, want)
	}
}

// Beyond MaxWaiting requests waiting for a connector's tokens, the next is
// answered at once with ErrOverloaded; the ones waiting are served.
func TestWaitingRequestsAreBounded(t *testing.T) {
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st})
	t.Cleanup(k.Wait)
	for i := range 11 {
		seedUser(t, k, i, time.Now().Add(time.Hour))
		k.Forget(user(i))
	}
	st.hold = make(chan struct{}) // store reads hang until released
	p := policy
	p.MaxWaiting, p.MaxWait = 10, time.Hour
	var wg sync.WaitGroup
	var served atomic.Int64
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := k.Token(context.Background(), user(i), nil, p); err == nil && tok.AccessToken == fmt.Sprint("at-", i) {
				served.Add(1)
			}
		}()
	}
	g := k.gate("demo")
	eventually(t, "10 requests to wait", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.waiting == 10 })
	_, err := k.Token(context.Background(), user(10), nil, p)
	var ue *UnavailableError
	if !errors.Is(err, ErrOverloaded) || !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Fatalf("the 11th waiting request got %v; want an UnavailableError wrapping ErrOverloaded at once", err)
	}
	close(st.hold)
	wg.Wait()
	if served.Load() != 10 {
		t.Fatalf("%d of the 10 waiting requests were served; want 10", served.Load())
	}
	// The shed request's read went on in the background.
	k.Wait()
	if tok, err := k.Token(context.Background(), user(10), nil, p); err != nil || tok.AccessToken != "at-10" {
		t.Fatalf("after the wave: %q, %v; want at-10", tok.AccessToken, err)
	}
}

// Requests waiting for a scoped token count among the connector's waiting
// requests: beyond MaxWaiting one is answered at once with ErrOverloaded.
func TestScopedWaitingRequestsAreBounded(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	t.Cleanup(k.Wait)
	for i := range 4 {
		seedUser(t, k, i, clk.Now().Add(time.Hour))
	}
	r := &heldRefresher{now: clk.Now, release: make(chan struct{})}
	t.Cleanup(func() { close(r.release) })
	p := policy
	p.MaxWaiting, p.MaxWait = 3, time.Hour
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { k.TokenFor(context.Background(), user(i), r, p, sharepoint) })
	}
	g := k.gate("demo")
	eventually(t, "3 requests to wait", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.waiting == 3 })
	_, err := k.TokenFor(context.Background(), user(3), r, p, sharepoint)
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("the 4th waiting request got %v; want ErrOverloaded at once", err)
	}
	for range 4 { // the shed request's refresh went on
		r.release <- struct{}{}
	}
	wg.Wait()
}

// BenchmarkWaitingMemory measures what a request waiting for a token costs
// the Keeper (its goroutine, timer and share of the job): b.N requests wait
// for store reads held until they all wait. Run with -benchtime=1000x.
func BenchmarkWaitingMemory(b *testing.B) {
	st := &faultStore{Store: newFileStore(&testing.T{})}
	k := NewKeeper(Options{Store: st})
	for i := range 100 {
		ot := &oauth2.Token{AccessToken: fmt.Sprint("at-", i), RefreshToken: fmt.Sprint("rt-", i), Expiry: time.Now().Add(time.Hour)}
		if _, err := k.Save(context.Background(), user(i), ot, "alice"); err != nil {
			b.Fatal(err)
		}
		k.Forget(user(i))
	}
	st.hold = make(chan struct{})
	p := policy
	p.MaxWaiting, p.MaxWait = b.N+1, time.Hour
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range b.N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.Token(context.Background(), user(i%100), nil, p)
		}()
	}
	g := k.gate("demo")
	for {
		g.mu.Lock()
		n := g.waiting
		g.mu.Unlock()
		if n == b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	close(st.hold)
	wg.Wait()
	k.Wait()
	used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
	b.ReportMetric(float64(used)/float64(b.N), "B/waiter")
}

// A replica that finds another's lease waits about as long as its own
// refreshes take, doubling, bounded, and never past the lease's end.
func TestLeaseWait(t *testing.T) {
	g := &gate{}
	g.took(200 * time.Millisecond)
	now := time.Now()
	l := lease{holder: "other", until: now.Add(time.Minute)}
	for _, c := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 200 * time.Millisecond, 300 * time.Millisecond},
		{3, 800 * time.Millisecond, 1200 * time.Millisecond},
		{20, expectedRefreshMax, expectedRefreshMax * 3 / 2},
	} {
		if d := g.leaseWait(c.n, l, now, 5*time.Second); d < c.min || d > c.max {
			t.Errorf("wait %d: %s; want %s to %s", c.n, d, c.min, c.max)
		}
	}
	ending := lease{holder: "other", until: now.Add(time.Second)}
	if d := g.leaseWait(5, ending, now, time.Second); d > 2*time.Second {
		t.Errorf("wait past the lease's end and skew: %s; want at most 2s", d)
	}
}

// Background re-reads of cached connections are bounded like refreshes:
// with MaxConcurrentRefreshes 2 and ten connections due for revalidation
// while the store hangs, two reads are made; the others are tried again by
// later requests.
func TestRevalidationsAreBounded(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait)
	p := policy
	p.MaxConcurrentRefreshes = 2
	for i := range 10 {
		seedUser(t, k, i, clk.Now().Add(time.Hour))
	}
	clk.Add(2 * time.Minute) // past the revalidation interval, not due
	st.hold = make(chan struct{})
	gets := st.gets.Load()
	for i := range 10 {
		if tok, err := k.Token(context.Background(), user(i), nil, p); err != nil || tok.AccessToken != fmt.Sprint("at-", i) {
			t.Fatalf("Token: %q, %v", tok.AccessToken, err)
		}
	}
	eventually(t, "two re-reads to start", func() bool { return st.gets.Load()-gets == 2 })
	time.Sleep(100 * time.Millisecond) // none more starts
	if n := st.gets.Load() - gets; n != 2 {
		t.Fatalf("%d re-reads started with the store hanging; want 2", n)
	}
	close(st.hold)
	k.Wait()
	for range 10 { // later requests, each pass waiting for its reads
		for i := range 10 {
			k.Token(context.Background(), user(i), nil, p)
		}
		k.Wait()
	}
	if n := st.gets.Load() - gets; n != 10 {
		t.Fatalf("%d re-reads after the store answered again; want 10 (each connection once)", n)
	}
}
