package tokens

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
)

// scopedRefresher is a token endpoint that rotates the refresh token on
// every refresh and accepts only the latest one, as strictly rotating
// providers do; a scoped refresh's access token names its scopes.
type scopedRefresher struct {
	mu      sync.Mutex
	now     func() time.Time
	current string   // the only refresh token honoured
	calls   []string // "rt scopes" of each request
	delay   time.Duration
	refuse  map[string]bool // scopes answered with invalid_grant
	n       atomic.Int64
}

func (r *scopedRefresher) Refresh(ctx context.Context, rt string) (*oauth2.Token, error) {
	return r.RefreshScoped(ctx, rt, nil)
}

func (r *scopedRefresher) RefreshScoped(_ context.Context, rt string, scopes []string) (*oauth2.Token, error) {
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.Join(scopes, " ")
	r.calls = append(r.calls, rt+" "+s)
	if rt != r.current || r.refuse[s] {
		return nil, fmt.Errorf("refused: %w: %w", connector.ErrGrantRejected, &connector.ProviderError{Status: 400, Code: "invalid_grant"})
	}
	n := r.n.Add(1)
	r.current = fmt.Sprint("rt-", n)
	at := fmt.Sprint("at-", n)
	if s != "" {
		at = fmt.Sprintf("at-%d for %s", n, s)
	}
	return &oauth2.Token{AccessToken: at, RefreshToken: r.current, Expiry: r.now().Add(time.Hour)}, nil
}

func (r *scopedRefresher) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

var sharepoint = []string{"https://contoso.sharepoint.com/.default"}

// A storm of requests for a scoped token makes one token request; its
// rotated refresh token is what the store holds, the connection's own
// access token is kept and keeps being served without a refresh, and the
// connection's next refresh redeems the rotated refresh token.
func TestTokenForRefreshesOnceAndStoresTheRotatedToken(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &countingStore{Store: newFileStore(t)}
	obs := &outcomes{}
	k := NewKeeper(Options{Store: st, Now: clk.Now, Observer: obs})
	t.Cleanup(k.Wait)
	r := &scopedRefresher{now: clk.Now, current: "rt-0", delay: 20 * time.Millisecond}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			tok, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint)
			if err == nil && tok.AccessToken != "at-1 for https://contoso.sharepoint.com/.default" {
				err = fmt.Errorf("got %q", tok.AccessToken)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r.count() != 1 {
		t.Fatalf("token requests %v; want one", r.calls)
	}
	data := stored(t, st, demo)
	if data["refresh_token"] != "rt-1" || data["access_token"] != "at-0" || data["lease_holder"] != "" {
		t.Fatalf("store holds refresh %q access %q lease %q; want the rotated rt-1, the connection's at-0, no lease",
			data["refresh_token"], data["access_token"], data["lease_holder"])
	}
	if obs.count("scoped:ok") != 1 {
		t.Fatalf("observer heard %v", obs.got)
	}
	// The connection's own token is served as before, from memory.
	gets := st.gets.Load()
	if tok, err := k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("Token = %q, %v", tok.AccessToken, err)
	}
	if tok, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != nil || !strings.HasPrefix(tok.AccessToken, "at-1 ") {
		t.Fatalf("TokenFor again = %q, %v", tok.AccessToken, err)
	}
	if st.gets.Load() != gets || r.count() != 1 {
		t.Fatal("cached tokens touched the store or the token endpoint")
	}
	// The connection's next refresh redeems the rotated token.
	clk.Add(59 * time.Minute)
	if tok, err := k.Token(context.Background(), demo, r, policy); err == nil && tok.AccessToken == "at-0" {
		// Served while the background refresh runs.
		eventually(t, "the connection's refresh", func() bool { return r.count() >= 2 })
	} else if err != nil {
		t.Fatal(err)
	}
	k.Wait()
	if got := r.calls[1]; !strings.HasPrefix(got, "rt-1") {
		t.Fatalf("the connection's refresh redeemed %q; want rt-1", got)
	}
	if data := stored(t, st, demo); data["refresh_token"] != "rt-2" || data["access_token"] == "at-0" {
		t.Fatalf("after the connection's refresh the store holds %v", data)
	}
}

// Scoped and primary refreshes of one connection never redeem one refresh
// token twice, however they interleave: with a strictly rotating provider
// every request succeeds.
func TestScopedAndPrimaryRefreshesDoNotOverlap(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait)
	r := &scopedRefresher{now: clk.Now, current: "rt-0", delay: 5 * time.Millisecond}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	other := []string{"https://graph.microsoft.com/Mail.Read"}
	for round := range 5 {
		clk.Add(2 * time.Hour) // everything expired
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Go(func() {
				var err error
				switch i % 3 {
				case 0:
					_, err = k.Token(context.Background(), demo, r, policy)
				case 1:
					_, err = k.TokenFor(context.Background(), demo, r, policy, sharepoint)
				default:
					_, err = k.TokenFor(context.Background(), demo, r, policy, other)
				}
				if err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
	}
	r.checkEachRedeemedOnce(t)
}

// checkEachRedeemedOnce fails t if a refresh token was sent twice.
func (r *scopedRefresher) checkEachRedeemedOnce(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range r.calls {
		rt, _, _ := strings.Cut(c, " ")
		if seen[rt] {
			t.Fatalf("refresh token %s redeemed twice: %v", rt, r.calls)
		}
		seen[rt] = true
	}
}

// A provider refusing the refresh token for one resource's scopes does not
// end the connection: that resource answers authorization required, the
// connection keeps its grant, and no further token request is made for a
// while.
func TestScopedRefusalKeepsTheConnection(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait)
	r := &scopedRefresher{now: clk.Now, current: "rt-0", refuse: map[string]bool{sharepoint[0]: true}}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	for range 3 {
		if _, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != ErrAuthorizationRequired {
			t.Fatalf("TokenFor = %v; want ErrAuthorizationRequired", err)
		}
	}
	if r.count() != 1 {
		t.Fatalf("token requests %v; want one", r.calls)
	}
	if tok, err := k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("Token = %q, %v", tok.AccessToken, err)
	}
	if data := stored(t, st, demo); data["refresh_token"] != "rt-0" || data["state"] != "" {
		t.Fatalf("store holds %v", data)
	}
	// A disconnected connection's scoped tokens are never served.
	r.refuse = nil
	clk.Add(time.Minute)
	if _, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != nil {
		t.Fatal(err)
	}
	if err := k.Disconnect(context.Background(), demo); err != nil {
		t.Fatal(err)
	}
	if _, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != ErrAuthorizationRequired {
		t.Fatalf("TokenFor after disconnect = %v", err)
	}
}

// An upstream 401 to a scoped token gets one refresh and a new token; a
// second within the cooldown is passed through.
func TestRejectedFor(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	t.Cleanup(k.Wait)
	r := &scopedRefresher{now: clk.Now, current: "rt-0"}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	first, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint)
	if err != nil {
		t.Fatal(err)
	}
	second, err := k.RejectedFor(context.Background(), demo, r, policy, sharepoint, first.AccessToken)
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("RejectedFor = %q, %v", second.AccessToken, err)
	}
	if _, err := k.RejectedFor(context.Background(), demo, r, policy, sharepoint, second.AccessToken); err != ErrNoRetry {
		t.Fatalf("second RejectedFor within the cooldown = %v", err)
	}
	if r.count() != 2 {
		t.Fatalf("token requests %v", r.calls)
	}
}

// A rotated refresh token from a scoped refresh that the store does not
// take stays the connection's: the next refresh (scoped or not) redeems
// it, never the store's older one, and it reaches the store once the store
// answers again.
func TestScopedRotationSurvivesAFailedWrite(t *testing.T) {
	clk := &clock{t: time.Now()}
	var down atomic.Bool
	st := &faultStore{Store: newFileStore(t)}
	cache := NewCache()
	k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: cache})
	t.Cleanup(func() { cache.Close(time.Second) })
	r := &scopedRefresher{now: clk.Now, current: "rt-0"}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	st.failPut = func(path string, _ int64) bool { return down.Load() && path == demo.tokenPath() }

	// The lease is taken; then the store fails before the write.
	fail := &downAfterRefresh{scopedRefresher: r, down: &down}
	tok, err := k.TokenFor(context.Background(), demo, fail, policy, sharepoint)
	if err != nil || !strings.HasPrefix(tok.AccessToken, "at-1 ") {
		t.Fatalf("TokenFor = %q, %v", tok.AccessToken, err)
	}
	if got := stored(t, st, demo)["refresh_token"]; got != "rt-0" {
		t.Fatalf("store holds %q; the write was meant to fail", got)
	}
	if s, _ := k.Status(context.Background(), demo); !s.Unsaved {
		t.Fatal("status does not report the unsaved rotation")
	}
	// Another scope set, then the connection's own refresh: each redeems
	// the latest refresh token, from memory.
	if _, err := k.TokenFor(context.Background(), demo, fail, policy, []string{"https://graph.microsoft.com/Mail.Read"}); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Hour)
	if tok, err := k.Token(context.Background(), demo, fail, policy); err != nil || tok.AccessToken != "at-3" {
		t.Fatalf("Token while unsaved = %q, %v", tok.AccessToken, err)
	}
	r.mu.Lock()
	calls := slices.Clone(r.calls)
	r.mu.Unlock()
	for i, want := range []string{"rt-0", "rt-1", "rt-2"} {
		if !strings.HasPrefix(calls[i], want+" ") {
			t.Fatalf("refresh %d redeemed %q; want %s (calls %v)", i+1, calls[i], want, calls)
		}
	}
	down.Store(false)
	eventually(t, "the pending write to land", func() bool { return stored(t, st, demo)["refresh_token"] == "rt-3" })
}

// downAfterRefresh turns the store off after each token request.
type downAfterRefresh struct {
	*scopedRefresher
	down *atomic.Bool
}

func (d *downAfterRefresh) Refresh(ctx context.Context, rt string) (*oauth2.Token, error) {
	return d.RefreshScoped(ctx, rt, nil)
}

func (d *downAfterRefresh) RefreshScoped(ctx context.Context, rt string, scopes []string) (*oauth2.Token, error) {
	t, err := d.scopedRefresher.RefreshScoped(ctx, rt, scopes)
	d.down.Store(true)
	return t, err
}

// Replicas sharing a store each obtain their own scoped token, one after
// the other under the lease: none redeems a refresh token another already
// redeemed, and the store ends with the last rotation.
func TestReplicasScopedRefreshUnderTheLease(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	r := &scopedRefresher{now: clk.Now, current: "rt-0", delay: 20 * time.Millisecond}
	var replicas []*Keeper
	for range 3 {
		k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()})
		t.Cleanup(k.Wait)
		replicas = append(replicas, k)
	}
	seed(t, replicas[0], "at-0", "rt-0", clk.Now().Add(time.Hour))
	var wg sync.WaitGroup
	for _, k := range replicas {
		for range 10 {
			wg.Go(func() {
				if _, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if r.count() != 3 {
		t.Fatalf("token requests %v; want one per replica", r.calls)
	}
	if got := stored(t, st, demo)["refresh_token"]; got != r.current {
		t.Fatalf("store holds %q; the provider honours %q", got, r.current)
	}
}

// A transient failure of a scoped refresh backs off that scope set alone:
// no token request until the backoff ends, and the connection's own token
// is unaffected.
func TestScopedTransientFailureBacksOff(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	t.Cleanup(k.Wait)
	r := &scopedRefresher{now: clk.Now, current: "rt-0"}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	down := &failingScoped{scopedRefresher: r}
	for range 5 {
		var ue *UnavailableError
		if _, err := k.TokenFor(context.Background(), demo, down, policy, sharepoint); !errors.As(err, &ue) {
			t.Fatalf("TokenFor = %v; want an UnavailableError", err)
		}
	}
	if n := down.calls.Load(); n != 1 {
		t.Fatalf("%d token requests; want 1, then the backoff", n)
	}
	if tok, err := k.Token(context.Background(), demo, down, policy); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("Token = %q, %v", tok.AccessToken, err)
	}
	clk.Add(2 * time.Minute)
	if tok, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint); err != nil || !strings.HasPrefix(tok.AccessToken, "at-1 ") {
		t.Fatalf("TokenFor after the backoff = %q, %v", tok.AccessToken, err)
	}
}

// failingScoped answers every scoped refresh with a 503.
type failingScoped struct {
	*scopedRefresher
	calls atomic.Int64
}

func (f *failingScoped) RefreshScoped(context.Context, string, []string) (*oauth2.Token, error) {
	f.calls.Add(1)
	return nil, &connector.ProviderError{Status: 503}
}

// A scoped refresh of an unsaved token set can finish after the writer has
// put that set in the store, and the store can fail right after: the
// rotated refresh token must still follow the set there, as for the
// connection's own refresh, once the store answers again.
func TestScopedUnsavedRefreshFinishesAfterItsWrite(t *testing.T) {
	clk := &clock{t: time.Now()}
	var down atomic.Bool
	st := &faultStore{Store: newFileStore(t)}
	st.failGet = func(string) bool { return down.Load() }
	st.failPut = func(string, int64) bool { return down.Load() }
	cache := NewCache()
	k := NewKeeper(Options{Store: st, Now: clk.Now, Cache: cache})
	t.Cleanup(func() { cache.Close(time.Second); k.Wait() })
	pw := rotatedUnsaved(t, k, clk.Now().Add(time.Hour))
	r := &scopedRefresher{now: clk.Now, current: "rt-1"}
	r.n.Store(1)
	land := &beforeRefresh{scopedRefresher: r, before: func() {
		if _, err, ok := k.write(demo, pw); err != nil || !ok {
			t.Errorf("write: %v, %v", err, ok)
		}
		down.Store(true)
	}}
	tok, err := k.TokenFor(context.Background(), demo, land, policy, sharepoint)
	if err != nil || !strings.HasPrefix(tok.AccessToken, "at-2 ") {
		t.Fatalf("TokenFor = %q, %v", tok.AccessToken, err)
	}
	down.Store(false)
	eventually(t, "the rotated refresh token to reach the store", func() bool { return stored(t, st, demo)["refresh_token"] == "rt-2" })
	if d := stored(t, st, demo); d["access_token"] != "at-1" {
		t.Fatalf("the store holds access token %q; want the connection's own at-1", d["access_token"])
	}
}

// beforeRefresh runs before on each token request.
type beforeRefresh struct {
	*scopedRefresher
	before func()
}

func (b *beforeRefresh) Refresh(ctx context.Context, rt string) (*oauth2.Token, error) {
	return b.RefreshScoped(ctx, rt, nil)
}

func (b *beforeRefresh) RefreshScoped(ctx context.Context, rt string, scopes []string) (*oauth2.Token, error) {
	b.before()
	return b.scopedRefresher.RefreshScoped(ctx, rt, scopes)
}

// reconnectingRefresher is a scopedRefresher whose first scoped token
// request coincides with the person connecting again (reconnect runs
// while it is at the provider).
type reconnectingRefresher struct {
	*scopedRefresher
	once      atomic.Bool
	reconnect func()
}

func (r *reconnectingRefresher) RefreshScoped(ctx context.Context, rt string, scopes []string) (*oauth2.Token, error) {
	tok, err := r.scopedRefresher.RefreshScoped(ctx, rt, scopes)
	if r.once.CompareAndSwap(false, true) {
		r.reconnect()
	}
	return tok, err
}

// A scoped token obtained from a grant replaced while its request was at
// the provider is not used; the request gets one from the new grant rather
// than being told to authorize.
func TestScopedTokenAcrossAReconnect(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now, Cache: NewCache()})
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	r := &reconnectingRefresher{scopedRefresher: &scopedRefresher{now: clk.Now, current: "rt-0"}}
	r.reconnect = func() {
		seed(t, k, "at-new", "rt-new", clk.Now().Add(time.Hour))
		r.mu.Lock()
		r.current = "rt-new"
		r.mu.Unlock()
	}
	tok, err := k.TokenFor(context.Background(), demo, r, policy, sharepoint)
	if err != nil {
		t.Fatalf("TokenFor across a reconnect: %v", err)
	}
	if r.calls[len(r.calls)-1] != "rt-new "+sharepoint[0] || tok.AccessToken == "" {
		t.Fatalf("the token %q does not come from the new grant (requests %q)", tok.AccessToken, r.calls)
	}
}
