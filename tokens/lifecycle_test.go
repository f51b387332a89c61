package tokens

// Each test here breaks something between the Keeper and its store or the
// token endpoint, and checks one invariant of "How a connection is kept"
// (README): what the caller gets, what the store holds, and which refresh
// tokens were redeemed.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/time/rate"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// faultStore fails or holds the store requests a test chooses.
type faultStore struct {
	Store
	gets, puts atomic.Int64
	// failPut, if set, decides whether the n-th Put (from 1) to path fails.
	failPut func(path string, n int64) bool
	// failGet, if set, decides whether a Get of path fails.
	failGet func(path string) bool
	// hold, if set, blocks each Get until it is closed.
	hold chan struct{}
	// onGet, if set, runs inside each Get after it has read the store,
	// before the answer is returned.
	onGet func()
	// onPut, if set, runs inside each Put before it reaches the store.
	onPut func()
	// loseAnswer, if set, decides whether the n-th Put (from 1) to path,
	// once the store has taken it, is reported failed all the same (a
	// time-out, a connection reset after Vault applied the write).
	loseAnswer func(path string, n int64) bool
}

var errStoreDown = errors.New("store unavailable (injected)")

func (s *faultStore) Get(ctx context.Context, p string) (kv.Entry, error) {
	s.gets.Add(1)
	if s.failGet != nil && s.failGet(p) {
		return kv.Entry{}, errStoreDown
	}
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return kv.Entry{}, ctx.Err()
		}
	}
	e, err := s.Store.Get(ctx, p)
	if s.onGet != nil {
		s.onGet()
	}
	return e, err
}

func (s *faultStore) Put(ctx context.Context, p string, d map[string]string, cas int) (int, error) {
	n := s.puts.Add(1)
	if s.onPut != nil {
		s.onPut()
	}
	if s.failPut != nil && s.failPut(p, n) {
		return 0, errStoreDown
	}
	v, err := s.Store.Put(ctx, p, d, cas)
	if err == nil && s.loseAnswer != nil && s.loseAnswer(p, n) {
		return 0, errStoreDown
	}
	return v, err
}

// outcomes records what an Observer hears.
type outcomes struct {
	mu  sync.Mutex
	got []string
}

func (o *outcomes) Refreshed(_ Key, trigger, outcome string) {
	o.mu.Lock()
	o.got = append(o.got, trigger+":"+outcome)
	o.mu.Unlock()
}

func (o *outcomes) count(s string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, g := range o.got {
		if g == s {
			n++
		}
	}
	return n
}

func stored(t *testing.T, st Store, key Key) map[string]string {
	t.Helper()
	e, err := st.Get(context.Background(), key.tokenPath())
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return e.Data
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gave up waiting: %s", what)
}

// A rotated refresh token the store did not take stays the one in use: the
// next refresh redeems it (not the store's older one), and it reaches the
// store once the store answers again. The "ok" outcome waits for the write.
func TestRotatedTokenSurvivesAFailedWrite(t *testing.T) {
	clk := &clock{t: time.Now()}
	var down atomic.Bool
	st := &faultStore{Store: newFileStore(t)}
	obs := &outcomes{}
	cache := NewCache()
	k := NewKeeper(Options{Store: st, Now: clk.Now, Observer: obs, Cache: cache})
	t.Cleanup(func() { cache.Close(time.Second) })
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)

	// The token endpoint rotates; then every write fails.
	st.failPut = func(string, int64) bool { return down.Load() }
	r.answer = func(n int, rt string) (*oauth2.Token, error) {
		down.Store(true)
		return rotating(clk.Now)(n, rt)
	}
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("Token after a rotation the store did not take = %q, %v; want at-1 from memory", tok.AccessToken, err)
	}
	if got := stored(t, st, demo)["refresh_token"]; got != "rt-0" {
		t.Fatalf("store holds %q; the write was meant to fail", got)
	}
	if s, _ := k.Status(context.Background(), demo); !s.Unsaved {
		t.Fatal("status does not report the unsaved token set")
	}
	if obs.count("proactive:ok") != 0 {
		t.Fatal(`"ok" reported before the token set was written`)
	}

	// The next refresh redeems rt-1, never the store's rt-0.
	clk.Add(2 * time.Hour)
	if tok, err = k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-2" {
		t.Fatalf("second refresh while unsaved = %q, %v", tok.AccessToken, err)
	}
	if r.calls[1] != "rt-1" {
		t.Fatalf("second refresh redeemed %q; want the unsaved rt-1", r.calls[1])
	}

	// The store comes back: the latest token set is written.
	down.Store(false)
	eventually(t, "the pending write to land", func() bool { return stored(t, st, demo)["refresh_token"] == "rt-2" })
	eventually(t, `"ok" reported for both refreshes`, func() bool { return obs.count("proactive:ok") == 2 })
	if s, _ := k.Status(context.Background(), demo); s.Unsaved || !s.Connected {
		t.Fatalf("status after the write = %+v", s)
	}
	if got := stored(t, st, demo)["lease_holder"]; got != "" {
		t.Fatalf("lease still held after the write: %q", got)
	}
}

// invalid_grant ends a connection only if the store still holds the refresh
// token that was refused: if another writer (a reconnect) replaced it
// meanwhile, the new connection is used and left intact.
func TestInvalidGrantSparesANewerConnection(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	other := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	r := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) {
		// A person reconnects while the provider refuses the old grant.
		if _, err := other.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-new", RefreshToken: "rt-new", Expiry: clk.Now().Add(time.Hour)}, "bob"); err != nil {
			t.Error(err)
		}
		return nil, fmt.Errorf("x: %w", connector.ErrGrantRejected)
	}}
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-new" {
		t.Fatalf("Token = %q, %v; want the reconnected at-new", tok.AccessToken, err)
	}
	if d := stored(t, st, demo); d["refresh_token"] != "rt-new" || d["state"] != "" {
		t.Fatalf("store holds %v; the reconnect was destroyed", keys(d))
	}
}

// A refresh in flight while the connection is disconnected and connected
// again (a new grant) never writes the old grant's tokens over the new
// connection, although the record's version may have been reused.
func TestRefreshAcrossDisconnectAndReconnect(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	other := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	r := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
		if err := other.Disconnect(context.Background(), demo); err != nil {
			t.Error(err)
		}
		if _, err := other.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-new", RefreshToken: "rt-new", Expiry: clk.Now().Add(time.Hour)}, "bob"); err != nil {
			t.Error(err)
		}
		return &oauth2.Token{AccessToken: "at-old-grant", RefreshToken: "rt-old-grant", Expiry: clk.Now().Add(time.Hour)}, nil
	}}
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-new" {
		t.Fatalf("Token = %q, %v; want the new connection's at-new", tok.AccessToken, err)
	}
	if d := stored(t, st, demo); d["access_token"] != "at-new" || d["connected_by"] != "bob" {
		t.Fatalf("store holds %v (access token %q); the old grant overwrote the new connection", keys(d), d["access_token"])
	}
}

// invalid_client (an expired client secret) keeps every connection: a valid
// access token is still served, then requests get ErrMisconfigured with a
// wait, the token endpoint is tried again only at the backoff cadence, and
// a new configuration (a reload) recovers at once, with no reconnect.
func TestClientRejectedKeepsConnections(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	obs := &outcomes{}
	k := NewKeeper(Options{Store: st, Now: clk.Now, Observer: obs})
	t.Cleanup(k.Wait)
	bad := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) {
		return nil, fmt.Errorf("x: %w: %w", connector.ErrClientRejected, &connector.ProviderError{Status: 401, Code: "invalid_client"})
	}}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	alice := Key{Connector: "demo", Subject: "alice"}
	if _, err := k.Save(context.Background(), alice, &oauth2.Token{AccessToken: "at-a", RefreshToken: "rt-a", Expiry: clk.Now().Add(time.Minute)}, ""); err != nil {
		t.Fatal(err)
	}

	// Due but valid: served, and the background refresh is refused.
	clk.Add(56 * time.Minute)
	if tok, err := k.Token(context.Background(), demo, bad, policy); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("Token while valid = %q, %v", tok.AccessToken, err)
	}
	k.Wait()
	if bad.count() != 1 || obs.count("proactive:misconfigured") != 1 {
		t.Fatalf("%d token requests, outcomes %v", bad.count(), obs.got)
	}
	if d := stored(t, st, demo); d["refresh_token"] != "rt-0" {
		t.Fatalf("store holds %v after invalid_client; the connection was destroyed", keys(d))
	}
	// Expired: one request probes the client again (the first wait is
	// over); it is refused, and the others get misconfigured, with a
	// wait, and make no token request for this or any other connection
	// of the connector until the wait is over.
	clk.Add(5 * time.Minute)
	for _, key := range []Key{demo, alice, demo} {
		_, err := k.Token(context.Background(), key, bad, policy)
		var ue *UnavailableError
		if !errors.Is(err, ErrMisconfigured) || !errors.As(err, &ue) || ue.RetryAfter <= 0 {
			t.Fatalf("Token of %s after expiry: %v; want ErrMisconfigured with a wait", key, err)
		}
	}
	if bad.count() != 2 {
		t.Fatalf("%d token requests; want 2 (the refusal, one probe after its wait)", bad.count())
	}
	if code, _, ok := k.cache.Misconfigured("demo"); !ok || code != "invalid_client" {
		t.Fatalf("Misconfigured = %q, %v", code, ok)
	}
	// A reload with the fixed secret recovers every connection at once.
	good := &scriptedRefresher{answer: rotating(clk.Now)}
	for _, key := range []Key{demo, alice} {
		if tok, err := k.Token(context.Background(), key, good, policy); err != nil || tok.AccessToken == "" {
			t.Fatalf("Token of %s after the fix = %q, %v", key, tok.AccessToken, err)
		}
	}
	if good.count() != 2 || good.calls[0] != "rt-0" || good.calls[1] != "rt-a" {
		t.Fatalf("after the fix the token endpoint saw %v", good.calls)
	}
	if _, _, ok := k.cache.Misconfigured("demo"); ok {
		t.Fatal("connector still reported misconfigured after a success")
	}
}

// Transient failures back off per connection: no token request while
// backing off, doubling waits, the provider's Retry-After honoured, and the
// backoff reset by a success.
func TestTransientFailuresBackOff(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	var fail atomic.Pointer[connector.ProviderError]
	fail.Store(&connector.ProviderError{Status: 503})
	r := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
		if err := fail.Load(); err != nil {
			return nil, err
		}
		return rotating(clk.Now)(n, rt)
	}}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	puts := st.puts.Load()
	var last time.Duration
	for range 50 {
		_, err := k.Token(context.Background(), demo, r, policy)
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.RetryAfter <= 0 || ue.RetryAfter > time.Second {
			t.Fatalf("Token while the provider fails: %v; want a wait of at most 1s", err)
		}
		last = ue.RetryAfter
	}
	if r.count() != 1 || st.puts.Load()-puts != 2 {
		t.Fatalf("50 requests made %d token requests and %d store writes; want 1 and 2 (lease, release)", r.count(), st.puts.Load()-puts)
	}
	clk.Add(last)
	k.Token(context.Background(), demo, r, policy)
	if r.count() != 2 {
		t.Fatalf("after the first wait: %d token requests; want 2", r.count())
	}
	clk.Add(time.Second) // the second wait is 1.6–2s
	k.Token(context.Background(), demo, r, policy)
	if r.count() != 2 {
		t.Fatalf("within the second wait: %d token requests; want still 2", r.count())
	}
	// Retry-After is honoured.
	fail.Store(&connector.ProviderError{Status: 429, RetryAfter: 30 * time.Second})
	clk.Add(time.Second)
	_, err := k.Token(context.Background(), demo, r, policy)
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryAfter < 30*time.Second || r.count() != 3 {
		t.Fatalf("after a 429 with Retry-After 30: %v, %d requests", err, r.count())
	}
	clk.Add(20 * time.Second)
	k.Token(context.Background(), demo, r, policy)
	if r.count() != 3 {
		t.Fatalf("Retry-After not honoured: %d token requests", r.count())
	}
	// Recovery: one refresh, and the backoff is gone.
	fail.Store(nil)
	clk.Add(11 * time.Second)
	if tok, err := k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-4" {
		t.Fatalf("after recovery: %q, %v", tok.AccessToken, err)
	}
	if e, _ := k.cache.get(demo); e.failures != 0 || !e.retryAt.IsZero() || e.lastErr != "" {
		t.Fatalf("backoff not reset: %+v", e)
	}
}

// The lease outlives the token request and the write after it: the token
// request's deadline leaves a store request and the skew before the lease
// ends. Another replica's lease is honoured until its end plus the skew.
func TestLeaseBoundsTheTokenRequest(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait)
	var deadline, until time.Time
	r := &scriptedRefresher{}
	r.answer = func(n int, rt string) (*oauth2.Token, error) {
		until, _ = time.Parse(time.RFC3339Nano, stored(t, st, demo)["lease_until"])
		return rotating(clk.Now)(n, rt)
	}
	rec := &deadlineRecorder{scriptedRefresher: r, deadline: &deadline}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)

	// Another replica's lease ended a second ago: still honoured (skew).
	d := stored(t, st, demo)
	d["lease_holder"], d["lease_until"] = "other", clk.Now().Add(-time.Second).Format(time.RFC3339Nano)
	e, _ := st.Get(context.Background(), demo.tokenPath())
	if _, err := st.Put(context.Background(), demo.tokenPath(), d, e.Version); err != nil {
		t.Fatal(err)
	}
	p := policy
	p.MaxWait = 100 * time.Millisecond
	k.Forget(demo)
	if _, err := k.Token(context.Background(), demo, rec, p); err == nil || r.count() != 0 {
		t.Fatalf("redeemed under another replica's lease (err %v, %d requests)", err, r.count())
	}
	// Past its end plus the skew, it is taken over.
	clk.Add(10 * time.Second)
	k.Wait() // the first job finishes once it sees the lease over
	if r.count() != 1 {
		t.Fatalf("%d token requests; want 1", r.count())
	}
	if until.IsZero() || deadline.IsZero() {
		t.Fatalf("lease until %v, token request deadline %v", until, deadline)
	}
	b := k.budget
	// The deadline is in real time, the lease in the test's clock: compare
	// what is left of each.
	leaseLeft := until.Sub(clk.Now())
	requestLeft := time.Until(deadline)
	if requestLeft > leaseLeft-b.store-b.skew+time.Second {
		t.Fatalf("token request may last %v, the lease %v: the write and the skew (%v) do not fit", requestLeft, leaseLeft, b.store+b.skew)
	}
	if requestLeft > b.token+time.Second {
		t.Fatalf("token request may last %v, more than the token timeout %v", requestLeft, b.token)
	}
}

type deadlineRecorder struct {
	*scriptedRefresher
	deadline *time.Time
}

func (d *deadlineRecorder) Refresh(ctx context.Context, rt string) (*oauth2.Token, error) {
	*d.deadline, _ = ctx.Deadline()
	return d.scriptedRefresher.Refresh(ctx, rt)
}

// A request waits at most MaxWait for a store read; the read goes on.
func TestMaxWait(t *testing.T) {
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st})
	t.Cleanup(k.Wait)
	seed(t, k, "at-0", "rt-0", time.Now().Add(time.Hour))
	k.Forget(demo)
	st.hold = make(chan struct{})
	p := policy
	p.MaxWait = 50 * time.Millisecond
	_, err := k.Token(context.Background(), demo, &scriptedRefresher{}, p)
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Fatalf("Token with a stuck store: %v; want an UnavailableError", err)
	}
	close(st.hold)
	eventually(t, "the read to finish in the background", func() bool {
		tok, err := k.Token(context.Background(), demo, &scriptedRefresher{}, p)
		return err == nil && tok.AccessToken == "at-0"
	})
}

// 401s that arrive while a 401-triggered refresh runs join it and retry
// with its result, instead of passing the upstream's 401 through.
func TestConcurrent401sJoinTheRefresh(t *testing.T) {
	k := NewKeeper(Options{Store: newFileStore(t)})
	r := &scriptedRefresher{answer: rotating(time.Now), delay: 100 * time.Millisecond}
	seed(t, k, "at-0", "rt-0", time.Time{}) // no expiry, as Notion's
	var wg sync.WaitGroup
	var retried atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := k.Rejected(context.Background(), demo, r, policy, "at-0"); err == nil && tok.AccessToken == "at-1" {
				retried.Add(1)
			}
		}()
	}
	wg.Wait()
	if retried.Load() != 20 || r.count() != 1 {
		t.Fatalf("%d of 20 concurrent 401s retried with the new token after %d refreshes; want 20 and 1", retried.Load(), r.count())
	}
}

// A replica learns of a disconnect made on another within the revalidation
// interval, at one store read per connection per interval, off the hot
// path; a reconnect likewise.
func TestRevalidationBoundsStaleness(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	st := &faultStore{Store: fs}
	a := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	b := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	p := policy
	p.Revalidate = 2 * time.Second
	seed(t, a, "at-0", "rt-0", clk.Now().Add(time.Hour))
	if tok, err := b.Token(context.Background(), demo, r, p); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("b: %q, %v", tok.AccessToken, err)
	}
	if err := a.Disconnect(context.Background(), demo); err != nil {
		t.Fatal(err)
	}
	clk.Add(3 * time.Second)
	gets := st.gets.Load()
	for range 100 {
		b.Token(context.Background(), demo, r, p) // may still serve the cached token once
	}
	b.Wait()
	if n := st.gets.Load() - gets; n != 1 {
		t.Fatalf("100 requests after the interval made %d store reads; want 1", n)
	}
	if _, err := b.Token(context.Background(), demo, r, p); !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("b after the disconnect and an interval: %v; want ErrAuthorizationRequired", err)
	}
	// A reconnect on a reaches b too.
	if _, err := a.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-new", RefreshToken: "rt-new", Expiry: clk.Now().Add(time.Hour)}, ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(3 * time.Second)
	eventually(t, "b to use the new connection", func() bool {
		tok, _ := b.Token(context.Background(), demo, r, p)
		b.Wait()
		return tok.AccessToken == "at-new"
	})
}

// A cache write never replaces a newer version with an older one.
func TestOlderLoadDoesNotReplaceNewer(t *testing.T) {
	k := NewKeeper(Options{Store: newFileStore(t)})
	seed(t, k, "at-0", "rt-0", time.Now().Add(time.Hour))
	old, _ := k.cache.get(demo)
	if _, err := k.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-new", Expiry: time.Now().Add(time.Hour)}, ""); err != nil {
		t.Fatal(err)
	}
	k.remember(demo, old.tok, old.version) // a load that read before the Save
	if tok, _ := k.Token(context.Background(), demo, nil, policy); tok.AccessToken != "at-new" {
		t.Fatalf("cache serves %q after an older load finished late", tok.AccessToken)
	}
}

// Keep-alive refreshes the connections idle for its period, on any replica
// and from the store (shared and per-user), and leaves the others alone.
func TestKeepAlive(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-shared", clk.Now().Add(time.Hour))
	idle := Key{Connector: "demo", Subject: "acme/idle"}
	busy := Key{Connector: "demo", Subject: "busy"}
	if _, err := k.Save(context.Background(), idle, &oauth2.Token{AccessToken: "a", RefreshToken: "rt-idle", Expiry: clk.Now().Add(time.Hour)}, ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(31 * 24 * time.Hour)
	if _, err := k.Save(context.Background(), busy, &oauth2.Token{AccessToken: "b", RefreshToken: "rt-busy", Expiry: clk.Now().Add(time.Hour)}, ""); err != nil {
		t.Fatal(err)
	}
	other := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()}) // knows nothing cached
	n, err := other.keepAlivePass(context.Background(), "demo", r, policy, 30*24*time.Hour, unlimited())
	if err != nil || n != 2 {
		t.Fatalf("keep-alive refreshed %d, %v; want 2", n, err)
	}
	if got := fmt.Sprint(r.calls); got != "[rt-shared rt-idle]" && got != "[rt-idle rt-shared]" {
		t.Fatalf("keep-alive redeemed %v", got)
	}
	// Nothing is idle now.
	if n, _ := other.keepAlivePass(context.Background(), "demo", r, policy, 30*24*time.Hour, unlimited()); n != 0 || r.count() != 2 {
		t.Fatalf("second pass refreshed %d (%d requests)", n, r.count())
	}
}

// Writes that must complete are not cancelled with the request that caused
// them: a consent saved, a disconnect.
func TestWritesOutliveTheirRequest(t *testing.T) {
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := k.Save(ctx, demo, &oauth2.Token{AccessToken: "at", RefreshToken: "rt"}, ""); err != nil {
		t.Fatalf("Save with a cancelled request: %v", err)
	}
	if err := k.Disconnect(ctx, demo); err != nil {
		t.Fatalf("Disconnect with a cancelled request: %v", err)
	}
	if d := stored(t, st, demo); d["state"] != string(Disconnected) || d["access_token"] != "" || d["refresh_token"] != "" {
		t.Fatalf("after disconnect the store holds %v", keys(d))
	}
}

// Closing the cache (Caddy stopping) waits for token sets still to be
// written.
func TestCloseWaitsForPendingWrites(t *testing.T) {
	clk := &clock{t: time.Now()}
	var down atomic.Bool
	st := &faultStore{Store: newFileStore(t), failPut: func(string, int64) bool { return down.Load() }}
	cache := NewCache()
	k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: cache})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	r := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
		down.Store(true)
		return rotating(clk.Now)(n, rt)
	}}
	if _, err := k.Token(context.Background(), demo, r, policy); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(300 * time.Millisecond); down.Store(false) }()
	if n := cache.Close(10 * time.Second); n != 0 {
		t.Fatalf("%d token sets left unwritten", n)
	}
	if got := stored(t, st, demo)["refresh_token"]; got != "rt-1" {
		t.Fatalf("store holds %q after Close; want rt-1", got)
	}
}

func unlimited() *rate.Limiter { return rate.NewLimiter(rate.Inf, 1) }

// A refresh costs three store requests: read, take the lease, write.
func TestRefreshCostsThreeStoreRequests(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	gets, puts := st.gets.Load(), st.puts.Load()
	if tok, err := k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("Token = %q, %v", tok.AccessToken, err)
	}
	if g, p := st.gets.Load()-gets, st.puts.Load()-puts; g+p != 3 {
		t.Fatalf("a refresh made %d reads and %d writes; want 3 requests in all", g, p)
	}
}

// Two replicas racing after a lost write: replica A rotates the refresh
// token but its store write fails for longer than its lease; replica B
// takes the lease over and redeems the store's older refresh token, which
// the provider refuses. When A's write lands (its check-and-set conflicts
// only because B's lease moved the version), A's token set is written over
// B's lease, B finds it instead of ending the connection, and the
// connection is kept.
func TestLostWriteRacesAnotherReplica(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	var down atomic.Bool
	stA := &faultStore{Store: fs, failPut: func(string, int64) bool { return down.Load() }}
	cacheA := NewCache()
	a := NewKeeper(Options{Store: stA, Now: clk.Now, Cache: cacheA})
	b := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	t.Cleanup(func() { cacheA.Close(time.Second); a.Wait(); b.Wait() })
	seed(t, a, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)

	ra := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
		down.Store(true) // the provider rotated; A's store writes fail from now on
		return &oauth2.Token{AccessToken: "at-a", RefreshToken: "rt-a", Expiry: clk.Now().Add(time.Hour)}, nil
	}}
	if tok, err := a.Token(context.Background(), demo, ra, policy); err != nil || tok.AccessToken != "at-a" {
		t.Fatalf("A: %q, %v", tok.AccessToken, err)
	}

	// A's lease runs out; B takes it over and redeems rt-0, held by the
	// provider until A's write has landed.
	clk.Add(2 * time.Minute)
	redeeming, landed := make(chan struct{}), make(chan struct{})
	var land sync.Once
	release := func() { land.Do(func() { close(landed) }) }
	t.Cleanup(release) // before the Wait above: never leave B blocked
	rb := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) {
		close(redeeming)
		<-landed
		return nil, fmt.Errorf("x: %w", connector.ErrGrantRejected)
	}}
	done := make(chan Token)
	go func() {
		tok, _ := b.Token(context.Background(), demo, rb, Policy{Margin: policy.Margin, MaxWait: time.Minute})
		done <- tok
	}()
	<-redeeming
	if got := stored(t, fs, demo)["lease_holder"]; got == "" || got == cacheA.holder {
		t.Fatalf("B did not take the lease over (holder %q)", got)
	}
	down.Store(false)
	eventually(t, "A's pending write to land over B's lease", func() bool { return stored(t, fs, demo)["refresh_token"] == "rt-a" })
	release()
	if tok := <-done; tok.AccessToken != "at-a" {
		t.Fatalf("B serves %q; want A's at-a", tok.AccessToken)
	}
	if d := stored(t, fs, demo); d["state"] != "" || d["refresh_token"] != "rt-a" {
		t.Fatalf("store holds %v (state %q); the connection was lost", keys(d), d["state"])
	}
	if rb.count() != 1 || rb.calls[0] != "rt-0" {
		t.Fatalf("B redeemed %v", rb.calls)
	}
}

// A revalidation of a connection the cache dropped meanwhile does not bring
// it back: with more connections in use than the cache holds, that would
// evict others in its place, again and again.
func TestRevalidationDoesNotRevive(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	if _, ok := k.cache.get(demo); !ok {
		t.Fatal("the seeded connection is not cached")
	}
	k.cache.forget(demo) // evicted
	k.revalidate(demo)
	if _, ok := k.cache.get(demo); ok {
		t.Fatal("revalidating an evicted connection put it back in the cache")
	}
}

// A store read under way while the connection changes here (a disconnect,
// a reconnect) answers with the record as it was: that answer must not
// undo the change in the cache. A revalidation would otherwise attach a
// disconnected connection's token again, or the old grant's after a
// reconnect, until the next one; a refresh job's read would cache "needs
// authorization" just after the person reconnected.
func TestLateReadDoesNotUndoALocalChange(t *testing.T) {
	for _, c := range []struct {
		name       string
		disconnect bool // before the read: a read finding the tombstone
		read       func(k *Keeper)
		change     func(t *testing.T, k *Keeper)
		want       string // the access token served afterwards; "" for none
	}{
		{"revalidation, then a disconnect", false, func(k *Keeper) { k.revalidate(demo) },
			func(t *testing.T, k *Keeper) {
				if err := k.Disconnect(context.Background(), demo); err != nil {
					t.Fatal(err)
				}
			}, ""},
		{"revalidation, then a reconnect", false, func(k *Keeper) { k.revalidate(demo) },
			func(t *testing.T, k *Keeper) { seed(t, k, "at-new", "rt-new", k.now().Add(time.Hour)) }, "at-new"},
		{"a refresh job's read of the tombstone, then a reconnect", true,
			func(k *Keeper) {
				k.Token(context.Background(), demo, &scriptedRefresher{answer: rotating(k.now)}, policy)
			},
			func(t *testing.T, k *Keeper) { seed(t, k, "at-new", "rt-new", k.now().Add(time.Hour)) }, "at-new"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			fs := &faultStore{Store: newFileStore(t)}
			k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
			seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
			if c.disconnect {
				if err := k.Disconnect(context.Background(), demo); err != nil {
					t.Fatal(err)
				}
				clk.Add(time.Minute) // past the missing TTL: the next request reads
			}
			read, release := holdFirstGet(fs) // the read; not the change's own reads
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.read(k)
			}()
			<-read
			c.change(t, k)
			close(release)
			<-done
			tok, err := k.Token(context.Background(), demo, &scriptedRefresher{answer: rotating(clk.Now)}, policy)
			switch {
			case c.want == "" && !errors.Is(err, ErrAuthorizationRequired):
				t.Fatalf("after the change: %q, %v; want authorization required", tok.AccessToken, err)
			case c.want != "" && (err != nil || tok.AccessToken != c.want):
				t.Fatalf("after the change: %q, %v; want %s", tok.AccessToken, err, c.want)
			}
		})
	}
}

// A revalidation read whose result is dropped because the cached entry
// changed meanwhile (any change here publishes a new entry) is made once
// more: a disconnect on another replica is still seen within the interval.
func TestOvertakenRevalidationReadsAgain(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	other := NewKeeper(Options{Store: fs.Store, Now: clk.Now}) // another replica
	read, release := holdFirstGet(fs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.revalidate(demo)
	}()
	<-read
	if err := other.Disconnect(context.Background(), demo); err != nil {
		t.Fatal(err)
	}
	k.cache.update(demo, func(e *entry) { e.failures = 0 }) // any change here
	close(release)
	<-done
	if tok, err := k.Token(context.Background(), demo, nil, policy); !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("after the other replica's disconnect: %q, %v; want authorization required", tok.AccessToken, err)
	}
}

// holdFirstGet makes fs's next Get read the store, close read, and wait
// until release is closed before it answers; the Gets after it go through.
func holdFirstGet(fs *faultStore) (read, release chan struct{}) {
	read, release = make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	fs.onGet = func() {
		if first.CompareAndSwap(false, true) {
			close(read)
			<-release
		}
	}
	return read, release
}

// rotatedUnsaved seeds the demo connection with at-0 and rt-0, then gives
// it a pending write of at-1 and rt-1 expiring at expiry: rt-0 redeemed,
// and the store has not taken the rotated set yet.
func rotatedUnsaved(t *testing.T, k *Keeper, expiry time.Time) *pendingWrite {
	t.Helper()
	seed(t, k, "at-0", "rt-0", k.now().Add(time.Hour))
	rec, v, err := k.read(demo)
	if err != nil {
		t.Fatal(err)
	}
	next := rec
	next.tok.AccessToken, next.tok.RefreshToken, next.tok.Expiry = "at-1", "rt-1", expiry
	pw := &pendingWrite{rec: next, cas: v, base: "rt-0"}
	k.cache.update(demo, func(e *entry) { e.pending, e.tok = pw, next.tok })
	return pw
}

// A refresh of an unsaved token set can rotate it again while the writer's
// Put of it is in flight. The rotated token set must still reach the store:
// the one being written has a spent refresh token.
func TestPendingWriteRotatedDuringItsPut(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
	pw := rotatedUnsaved(t, k, clk.Now().Add(time.Hour))
	once := true
	st.onPut = func() {
		if once { // as refreshUnsaved does: rt-1 redeemed for rt-2
			once = false
			k.cache.update(demo, func(e *entry) {
				pw.rec.tok.AccessToken, pw.rec.tok.RefreshToken = "at-2", "rt-2"
				e.tok = pw.rec.tok
			})
		}
	}
	if _, err, ok := k.write(demo, pw); err != nil || !ok {
		t.Fatalf("write: %v, %v", err, ok)
	}
	got, _, err := k.read(demo)
	if err != nil || got.tok.RefreshToken != "rt-2" {
		t.Fatalf("the store holds %q (%v); want rt-2, the only refresh token not spent", got.tok.RefreshToken, err)
	}
	if e, _ := k.cache.get(demo); e.pending != nil || e.tok.RefreshToken != "rt-2" {
		t.Fatalf("cache: pending %v, refresh token %q", e.pending != nil, e.tok.RefreshToken)
	}
}

// A refresh of an unsaved token set can finish after the writer has put
// that set in the store. The store then holds the refresh token just
// redeemed: the rotated set must follow it there, or the connection is
// lost at its next refresh. Once with the connection still cached, once
// with the cache having dropped it (the store then says which version to
// write over).
func TestUnsavedRefreshFinishesAfterItsWrite(t *testing.T) {
	for _, c := range []struct{ evicted, storeDown bool }{{false, false}, {true, false}, {false, true}} {
		evicted := c.evicted
		t.Run(fmt.Sprintf("evicted=%v,store down after=%v", c.evicted, c.storeDown), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			var down atomic.Bool
			fs := &faultStore{Store: newFileStore(t), failPut: func(string, int64) bool { return down.Load() }}
			cache := NewCache()
			k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: cache})
			t.Cleanup(func() { cache.Close(time.Second); k.Wait() })
			pw := rotatedUnsaved(t, k, clk.Now().Add(time.Minute))
			clk.Add(2 * time.Minute) // at-1 is due

			r := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
				// While rt-1 is being redeemed, the writer lands it.
				if _, err, ok := k.write(demo, pw); err != nil || !ok {
					t.Errorf("write: %v, %v", err, ok)
				}
				if evicted {
					k.cache.forget(demo)
				}
				down.Store(c.storeDown) // the new set's own write fails, and is retried
				return &oauth2.Token{AccessToken: "at-2", RefreshToken: "rt-2", Expiry: clk.Now().Add(time.Hour)}, nil
			}}
			tok, err := k.Token(context.Background(), demo, r, policy)
			if err != nil || tok.AccessToken != "at-2" {
				t.Fatalf("Token: %q, %v; want at-2", tok.AccessToken, err)
			}
			if r.count() != 1 || r.calls[0] != "rt-1" {
				t.Fatalf("redeemed %v; want [rt-1]", r.calls)
			}
			down.Store(false)
			eventually(t, "rt-2 to reach the store", func() bool { return stored(t, fs, demo)["refresh_token"] == "rt-2" })
			if d := stored(t, fs, demo); d["refresh_token"] != "rt-2" || d["state"] != "" {
				t.Fatalf("the store holds refresh token %q (state %q); want rt-2, the only one not spent", d["refresh_token"], d["state"])
			}
			eventually(t, "nothing pending", func() bool { e, _ := k.cache.get(demo); return e.pending == nil })
		})
	}
}

// A write the store takes but whose answer is lost is, to the writer, a
// failure: it keeps the token set pending. Refreshes of that unsaved set
// (its token falls due while the store stays unreachable, once or more
// often than the writer keeps failed writes in mind) then redeem its
// refresh token and their successors'. Once the store answers again, the
// writer finds its own lost write there and must write the newest set over
// it; taking it for another replica's refresh would leave a spent refresh
// token in the store, redeemed a second time at the next refresh, and a
// rotating provider ends the grant for that.
func TestLostAnswerThenUnsavedRefresh(t *testing.T) {
	for _, unsaved := range []int{1, maxUnsure + 2} {
		t.Run(fmt.Sprint(unsaved, " unsaved refreshes"), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			var down, lose atomic.Bool
			fs := &faultStore{Store: newFileStore(t),
				failPut: func(string, int64) bool { return down.Load() },
				loseAnswer: func(string, int64) bool {
					if lose.CompareAndSwap(true, false) {
						down.Store(true) // and unreachable from then on
						return true
					}
					return false
				}}
			cache := NewCache()
			k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: cache})
			t.Cleanup(func() { cache.Close(time.Second); k.Wait() })
			seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
			clk.Add(2 * time.Minute)
			rot := rotating(clk.Now)
			r := &scriptedRefresher{answer: func(n int, rt string) (*oauth2.Token, error) {
				lose.Store(n == 1) // the write of rt-1 lands, its answer is lost
				return rot(n, rt)
			}}
			for n := 1; n <= 1+unsaved; n++ {
				if tok, err := k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != fmt.Sprint("at-", n) {
					t.Fatalf("refresh %d: %q, %v", n, tok.AccessToken, err)
				}
				if e, _ := k.cache.get(demo); e.pending != nil {
					k.write(demo, e.pending) // as the writer would: it fails
				}
				clk.Add(2 * time.Hour)
			}
			if got := stored(t, fs.Store, demo)["refresh_token"]; got != "rt-1" {
				t.Fatalf("the store holds %q; the lost write should have put rt-1 there", got)
			}
			down.Store(false)
			eventually(t, "the pending write lands", func() bool { e, _ := k.cache.get(demo); return e.pending == nil })
			last := fmt.Sprint("rt-", 1+unsaved)
			if got := stored(t, fs.Store, demo)["refresh_token"]; got != last {
				t.Fatalf("the store holds %q; want %s, the only refresh token not spent", got, last)
			}
			if _, err := k.Token(context.Background(), demo, r, policy); err != nil {
				t.Fatalf("the next refresh: %v", err)
			}
			for i, rt := range r.calls {
				if want := fmt.Sprint("rt-", i); rt != want {
					t.Fatalf("refresh tokens redeemed %v; want rt-0, rt-1, … each once", r.calls)
				}
			}
		})
	}
}

// A token set the store did not take is written, after a reload, through
// the new configuration's store: the reload may be what fixes the writes
// (new credentials, another address), and the old configuration's store
// client stops with it.
func TestNewConfigurationTakesOverPendingWrites(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	seed(t, NewKeeper(Options{Store: fs, Now: clk.Now}), "at-0", "rt-0", clk.Now().Add(time.Minute))
	// The old configuration's store takes the lease (Put 1), then no
	// more writes: its credentials expired, say.
	old := &faultStore{Store: fs, failPut: func(_ string, n int64) bool { return n >= 2 }}
	cache := NewCache()
	k1 := NewKeeper(Options{Store: old, Now: clk.Now, Cache: cache})
	t.Cleanup(func() { cache.Close(time.Second); k1.Wait() })
	clk.Add(2 * time.Minute)
	if tok, err := k1.Token(context.Background(), demo, &scriptedRefresher{answer: rotating(clk.Now)}, policy); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("refresh: %q, %v", tok.AccessToken, err)
	}
	if e, _ := cache.get(demo); e.pending == nil {
		t.Fatal("the rotated set is not pending: the old store took it")
	}
	k2 := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: cache}) // the reload
	k2.TakeOverWrites()
	eventually(t, "the pending write lands through the new configuration's store", func() bool {
		e, _ := cache.get(demo)
		return e.pending == nil
	})
	if got := stored(t, fs, demo)["refresh_token"]; got != "rt-1" {
		t.Fatalf("the store holds %q; want rt-1", got)
	}
}

// A configuration that took over the writes and was then stopped, as Caddy
// stops one whose start another app's failure undid, gives them back: the
// configuration that goes on writes the unsaved token sets through its own
// store, not through the stopped one's (whose Vault login is no longer
// renewed).
func TestUndoneStartGivesTheWritesBack(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	seed(t, NewKeeper(Options{Store: fs, Now: clk.Now}), "at-0", "rt-0", clk.Now().Add(time.Minute))
	cache := NewCache()
	// The running configuration; its store fails the new set's first
	// write (Put 2, after the lease), so the set goes to the writer.
	running := NewKeeper(Options{Store: &faultStore{Store: fs, failPut: func(_ string, n int64) bool { return n == 2 }}, Now: clk.Now, Cache: cache})
	running.TakeOverWrites()
	undone := NewKeeper(Options{Store: &faultStore{Store: fs, failPut: func(string, int64) bool { return true }}, Now: clk.Now, Cache: cache})
	undone.TakeOverWrites()
	undone.ReleaseWrites()
	t.Cleanup(func() { cache.Close(time.Second); running.Wait() })
	clk.Add(2 * time.Minute)
	if tok, err := running.Token(context.Background(), demo, &scriptedRefresher{answer: rotating(clk.Now)}, policy); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("refresh: %q, %v", tok.AccessToken, err)
	}
	eventually(t, "the pending write lands through the running configuration's store", func() bool {
		e, _ := cache.get(demo)
		return e.pending == nil
	})
	// And a reload that took: the old configuration stops after the new
	// one started, which keeps the writes.
	next := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: cache})
	next.TakeOverWrites()
	running.ReleaseWrites()
	if cache.writeVia.Load() != next || next.tookOverFrom != nil {
		t.Fatal("after a reload the new configuration does not write alone")
	}
}

// retriedStore applies a Put, then retries it once as Vault's client does
// after an answer it did not get (or its failover to another address):
// the retry meets the version the first attempt made and is refused with a
// conflict. between runs before the retry.
type retriedStore struct {
	Store
	once    atomic.Bool
	between func()
}

func (s *retriedStore) Put(ctx context.Context, p string, d map[string]string, cas int) (int, error) {
	v, err := s.Store.Put(ctx, p, d, cas)
	if err == nil && s.between != nil && s.once.CompareAndSwap(false, true) {
		s.between()
		return s.Store.Put(ctx, p, d, cas)
	}
	return v, err
}

// A write the store took whose retry by the store's client then answers a
// conflict is still this chain's own: if the set it wrote was refreshed
// from memory meanwhile, the newest set goes over it rather than the spent
// refresh token staying in the store; also when another replica has taken
// a lease on the set that landed (its refresh of that spent refresh token
// then finds the newest set).
func TestRetriedWriteMeetsItself(t *testing.T) {
	for _, leased := range []bool{false, true} {
		t.Run(fmt.Sprint("leased by another replica=", leased), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			shared := newFileStore(t)
			st := &retriedStore{Store: shared}
			k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
			other := NewKeeper(Options{Store: shared, Now: clk.Now, Cache: NewCache()})
			pw := rotatedUnsaved(t, k, clk.Now().Add(time.Hour)) // the store: rt-0, spent; pending: rt-1
			st.between = func() {                                // rt-1 is redeemed from memory for rt-2 before the retry
				k.cache.update(demo, func(e *entry) {
					pw.rec.tok.AccessToken, pw.rec.tok.RefreshToken = "at-2", "rt-2"
					e.tok = pw.rec.tok
				})
				if leased {
					rec, v, err := other.read(demo)
					if err != nil {
						t.Fatal(err)
					}
					if _, _, err := other.takeLease(demo, rec, v); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err, ok := k.write(demo, pw); err != nil || !ok {
				t.Fatalf("write: %v, %v", err, ok)
			}
			if got := stored(t, shared, demo)["refresh_token"]; got != "rt-2" {
				t.Fatalf("the store holds %q; want rt-2, the only refresh token not spent", got)
			}
			if e, _ := k.cache.get(demo); e.pending != nil || e.tok.RefreshToken != "rt-2" {
				t.Fatalf("cache: pending %v, refresh token %q", e.pending != nil, e.tok.RefreshToken)
			}
		})
	}
}

// A refresh's write lands, and before its answer reaches the refresh the
// person disconnects, or reconnects, on this replica: the late answer must
// not put the old grant's token set back in the cache.
func TestLateWriteAnswerDoesNotUndoALocalChange(t *testing.T) {
	for _, reconnect := range []bool{false, true} {
		t.Run(fmt.Sprint("reconnect=", reconnect), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			fs := &faultStore{Store: newFileStore(t)}
			k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
			seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
			clk.Add(50 * time.Second) // due
			base := fs.puts.Load()
			fs.loseAnswer = func(_ string, n int64) bool {
				if n == base+2 { // the lease, then the refreshed set: landed, its answer not back yet
					if reconnect {
						seed(t, k, "at-new", "rt-new", clk.Now().Add(time.Hour))
					} else if err := k.Disconnect(context.Background(), demo); err != nil {
						t.Error(err)
					}
				}
				return false // and then answered
			}
			r := &scriptedRefresher{answer: rotating(clk.Now)}
			k.Token(context.Background(), demo, r, policy)
			k.Wait()
			tok, err := k.Token(context.Background(), demo, r, policy)
			switch {
			case reconnect && (err != nil || tok.AccessToken != "at-new"):
				t.Fatalf("after the reconnect: %q, %v; want at-new", tok.AccessToken, err)
			case !reconnect && !errors.Is(err, ErrAuthorizationRequired):
				t.Fatalf("after the disconnect: %q, %v; want authorization required", tok.AccessToken, err)
			}
		})
	}
}

// A write whose answer is lost puts the token set in the store with no
// lease, where another replica can take one and redeem its refresh token.
// This replica must not redeem the same refresh token from memory when it
// can reach the store: it settles its write first, then refreshes through
// the store like any other replica. Once after the other replica's
// refresh, once while that refresh holds the lease.
func TestLostAnswerThenAnotherReplicaRefreshes(t *testing.T) {
	for _, during := range []bool{false, true} {
		t.Run(fmt.Sprint("during the other's refresh=", during), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			var lose, armed atomic.Bool
			shared := newFileStore(t)
			fs := &faultStore{Store: shared, loseAnswer: func(string, int64) bool { return lose.CompareAndSwap(true, false) }}
			ca := NewCache()
			a := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: ca})
			b := NewKeeper(Options{Store: shared, Now: clk.Now, Cache: NewCache()})
			t.Cleanup(func() { ca.Close(time.Second); a.Wait(); b.Wait() })
			r := &scopedRefresher{now: clk.Now, current: "rt-0"}
			seed(t, a, "at-0", "rt-0", clk.Now().Add(time.Minute))
			clk.Add(2 * time.Minute)
			armed.Store(true)
			fs.onPut = func() { lose.Store(armed.Load() && r.n.Load() == 1) } // rt-1's write lands, unanswered
			if _, err := a.Token(context.Background(), demo, r, policy); err != nil {
				t.Fatal(err)
			}
			armed.Store(false)
			if e, _ := ca.get(demo); e.pending == nil || stored(t, shared, demo)["refresh_token"] != "rt-1" {
				t.Fatal("want rt-1 in the store and pending here")
			}
			bDone := make(chan error, 1)
			if during {
				r.delay = 300 * time.Millisecond // B's token request is under way when A asks
				go func() { _, err := b.TokenFor(context.Background(), demo, r, policy, sharepoint); bDone <- err }()
				for stored(t, shared, demo)["lease_holder"] == "" {
					time.Sleep(5 * time.Millisecond)
				}
			} else {
				_, err := b.TokenFor(context.Background(), demo, r, policy, sharepoint)
				bDone <- err
			}
			_, errA := a.TokenFor(context.Background(), demo, r, policy, sharepoint)
			if err := <-bDone; err != nil || errA != nil {
				t.Fatalf("B: %v; A: %v", err, errA)
			}
			r.checkEachRedeemedOnce(t)
		})
	}
}

// A disconnect ends the grant whose tokens it read (and revoked): a grant
// the person made meanwhile stays, and the caller hears so.
func TestDisconnectGrantSparesANewerGrant(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	old, err := k.Stored(context.Background(), demo)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, k, "at-new", "rt-new", clk.Now().Add(time.Hour)) // reconnected during the revocation
	if err := k.DisconnectGrant(context.Background(), demo, old.Generation); !errors.Is(err, ErrReplaced) {
		t.Fatalf("DisconnectGrant of the replaced grant: %v; want ErrReplaced", err)
	}
	if got := stored(t, fs, demo)["refresh_token"]; got != "rt-new" {
		t.Fatalf("the store holds %q; want the new grant's rt-new", got)
	}
	if tok, err := k.Token(context.Background(), demo, nil, policy); err != nil || tok.AccessToken != "at-new" {
		t.Fatalf("after it: %q, %v; want at-new", tok.AccessToken, err)
	}
	cur, _ := k.Stored(context.Background(), demo)
	if err := k.DisconnectGrant(context.Background(), demo, cur.Generation); err != nil {
		t.Fatalf("DisconnectGrant of the current grant: %v", err)
	}
	if d := stored(t, fs, demo); d["state"] != string(Disconnected) || d["refresh_token"] != "" {
		t.Fatalf("the store holds state %q; want the tombstone", d["state"])
	}
}

// settle asks the store before each refresh from memory, except for a
// while after it found no answer for the same refresh token: during an
// outage where the store answers nothing, not every refresh waits for it,
// and once the store may be back it is asked again.
func TestSettleAsksAgainAfterAWhile(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := &faultStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: fs, Now: clk.Now, Cache: NewCache()})
	pw := rotatedUnsaved(t, k, clk.Now().Add(time.Minute))
	fs.failPut = func(string, int64) bool { return true }
	k.write(demo, pw) // tried, failed: rt-1 may be in the store
	clk.Add(2 * time.Minute)
	j := job{key: demo, p: policy, want: proactive(policy)}
	for i, c := range []struct {
		after  time.Duration
		writes int64
	}{{0, 1}, {time.Second, 0}, {writeRetryMax, 1}} {
		clk.Add(c.after)
		before := fs.puts.Load()
		if k.settle(j, pw) {
			t.Fatal("settled with a store that fails every write")
		}
		if n := fs.puts.Load() - before; n != c.writes {
			t.Fatalf("settle %d, %v after the one before, wrote %d times; want %d", i+1, c.after, n, c.writes)
		}
	}
}

// A disconnect reads the generation from the record's fields as they are:
// a grant stored by a newer build (a schema this one cannot parse) is not
// ended by a disconnect of an older grant, while an unreadable record of
// the same grant still is.
func TestDisconnectGrantReadsUnparsableRecords(t *testing.T) {
	fs := newFileStore(t)
	k := NewKeeper(Options{Store: fs, Cache: NewCache()})
	put := func(fields map[string]string) {
		t.Helper()
		e, _ := fs.Get(context.Background(), demo.tokenPath())
		if _, err := fs.Put(context.Background(), demo.tokenPath(), fields, e.Version); err != nil {
			t.Fatal(err)
		}
	}
	put(map[string]string{"schema": "4", "generation": "g-newer", "access_token": "at-x"})
	if err := k.DisconnectGrant(context.Background(), demo, "g-old"); !errors.Is(err, ErrReplaced) {
		t.Fatalf("disconnecting g-old over a newer build's g-newer: %v; want ErrReplaced", err)
	}
	put(map[string]string{"schema": "3", "generation": "g-old", "expiry": "not a time", "access_token": "at-y"})
	if err := k.DisconnectGrant(context.Background(), demo, "g-old"); err != nil {
		t.Fatalf("disconnecting an unreadable record of g-old: %v", err)
	}
	if d := stored(t, fs, demo); d["state"] != string(Disconnected) {
		t.Fatalf("the store holds state %q; want the tombstone", d["state"])
	}
}
