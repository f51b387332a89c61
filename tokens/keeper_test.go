package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// countingStore counts the calls that reach the store.
type countingStore struct {
	Store
	gets, puts atomic.Int64
	beforePut  func(path string) // runs before each Put, if set
}

func (s *countingStore) Get(ctx context.Context, p string) (kv.Entry, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, p)
}

func (s *countingStore) Put(ctx context.Context, p string, d map[string]string, cas int) (int, error) {
	s.puts.Add(1)
	if s.beforePut != nil {
		s.beforePut(p)
	}
	return s.Store.Put(ctx, p, d, cas)
}

func newFileStore(t *testing.T) Store {
	s, err := filestore.New(t.TempDir(), bytes.Repeat([]byte{9}, filestore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// scriptedRefresher is the token endpoint as the Keeper sees it: it records
// each refresh token it is handed and answers from a script.
type scriptedRefresher struct {
	mu     sync.Mutex
	calls  []string
	delay  time.Duration
	answer func(n int, rt string) (*oauth2.Token, error)
}

func (r *scriptedRefresher) Refresh(_ context.Context, rt string) (*oauth2.Token, error) {
	r.mu.Lock()
	r.calls = append(r.calls, rt)
	n := len(r.calls)
	r.mu.Unlock()
	time.Sleep(r.delay)
	return r.answer(n, rt)
}

func (r *scriptedRefresher) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// rotating issues at-N / rt-N with a one-hour lifetime.
func rotating(now func() time.Time) func(int, string) (*oauth2.Token, error) {
	return func(n int, _ string) (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: fmt.Sprint("at-", n), RefreshToken: fmt.Sprint("rt-", n), TokenType: "bearer", Expiry: now().Add(time.Hour)}, nil
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var demo = Key{Connector: "demo"}
var policy = Policy{Margin: 5 * time.Minute, Cooldown: 30 * time.Second}

func seed(t *testing.T, k *Keeper, at, rt string, expiry time.Time) {
	t.Helper()
	if _, err := k.Save(context.Background(), demo, &oauth2.Token{AccessToken: at, RefreshToken: rt, Expiry: expiry}, "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestFreshTokenTouchesNothing(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &countingStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	gets, puts := st.gets.Load(), st.puts.Load()
	for range 10000 {
		tok, err := k.Token(context.Background(), demo, r, policy)
		if err != nil || tok.AccessToken != "at-0" {
			t.Fatalf("Token = %q, %v", tok.AccessToken, err)
		}
	}
	if st.gets.Load() != gets || st.puts.Load() != puts || r.count() != 0 {
		t.Fatalf("hot path made %d gets, %d puts, %d refreshes", st.gets.Load()-gets, st.puts.Load()-puts, r.count())
	}
}

func TestProactiveRefreshRotates(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait) // before the store's directory goes
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))

	// Past expiry minus margin, the token is still valid: it is served at
	// once and refreshed in the background.
	clk.Add(56 * time.Minute)
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("Token in margin = %q, %v; want the current token", tok.AccessToken, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tok, _ = k.Token(context.Background(), demo, r, policy)
		if tok.AccessToken == "at-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("background refresh never landed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.count() != 1 || r.calls[0] != "rt-0" {
		t.Fatalf("refresh calls = %v", r.calls)
	}
	e, err := st.Get(context.Background(), "tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	if e.Data["access_token"] != "at-1" || e.Data["refresh_token"] != "rt-1" || e.Data["expiry"] == "" {
		t.Fatalf("store holds %v", e.Data)
	}
}

func TestRefreshKeepsRefreshTokenWhenNoneReturned(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: "at-new", Expiry: clk.Now().Add(time.Hour)}, nil
	}}
	seed(t, k, "at-0", "rt-keep", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute) // expired: waits for the refresh
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-new" || tok.RefreshToken != "rt-keep" {
		t.Fatalf("Token = %+v, %v", tok, err)
	}
	e, _ := st.Get(context.Background(), "tokens/demo")
	if e.Data["refresh_token"] != "rt-keep" {
		t.Fatalf("stored refresh token = %q", e.Data["refresh_token"])
	}
}

func TestRefreshOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		expiresIn  time.Duration // of the seeded token, then the clock moves 2 minutes on
		rt         string
		answer     error
		wantTok    string
		wantErr    error
		wantStored bool
		wantMarked bool
		wantUnavl  bool
	}{
		{name: "invalid_grant marks the connection", expiresIn: time.Minute, rt: "rt",
			answer: fmt.Errorf("x: %w", connector.ErrGrantRejected), wantErr: ErrAuthorizationRequired, wantStored: true, wantMarked: true},
		{name: "transient with valid token serves it", expiresIn: 150 * time.Second, rt: "rt",
			answer: errors.New("connection refused"), wantTok: "at-0", wantStored: true},
		{name: "transient with expired token is unavailable", expiresIn: time.Minute, rt: "rt",
			answer: errors.New("503"), wantUnavl: true, wantStored: true},
		{name: "expired without refresh token", expiresIn: time.Minute, rt: "",
			wantErr: ErrAuthorizationRequired, wantStored: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			st := newFileStore(t)
			k := NewKeeper(Options{Store: st, Now: clk.Now})
			r := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) { return nil, tt.answer }}
			seed(t, k, "at-0", tt.rt, clk.Now().Add(tt.expiresIn))
			clk.Add(2 * time.Minute)
			k.Forget(demo) // go through the store, as a restarted process would
			tok, err := k.Token(context.Background(), demo, r, policy)
			var ue *UnavailableError
			switch {
			case tt.wantUnavl:
				if !errors.As(err, &ue) || ue.RetryAfter <= 0 {
					t.Fatalf("err = %v, want UnavailableError with RetryAfter", err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			default:
				if err != nil || tok.AccessToken != tt.wantTok {
					t.Fatalf("Token = %q, %v; want %q", tok.AccessToken, err, tt.wantTok)
				}
			}
			e, gerr := st.Get(context.Background(), "tokens/demo")
			if stored := gerr == nil; stored != tt.wantStored {
				t.Fatalf("token stored = %v, want %v", stored, tt.wantStored)
			}
			if marked := e.Data["state"] == string(NeedsAuthorization); marked != tt.wantMarked {
				t.Fatalf("record %v: marked = %v, want %v", keys(e.Data), marked, tt.wantMarked)
			}
			if tt.wantMarked && (e.Data["refresh_token"] != "" || e.Data["access_token"] != "" || e.Data["reason"] == "" || e.Data["since"] == "" || e.Data["connected_by"] != "alice") {
				t.Fatalf("marked record = %v; want reason, since and who connected, and no secret", keys(e.Data))
			}
			status, _ := k.Status(context.Background(), demo)
			if tt.answer != nil && status.LastError == "" {
				t.Fatal("status carries no last error")
			}
		})
	}
}

func TestConcurrentExpiredRequestsRefreshOnce(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now), delay: 50 * time.Millisecond}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := k.Token(context.Background(), demo, r, policy)
			if err != nil || tok.AccessToken != "at-1" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if r.count() != 1 || bad.Load() != 0 {
		t.Fatalf("refreshes = %d, failed requests = %d; want 1 and 0", r.count(), bad.Load())
	}
}

func TestReplicasSharingAStoreRefreshOnce(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	r := &scriptedRefresher{answer: rotating(clk.Now), delay: 100 * time.Millisecond}
	var replicas []*Keeper
	for range 3 {
		replicas = append(replicas, NewKeeper(Options{Store: st, Now: clk.Now, Cache: NewCache()}))
	}
	seed(t, replicas[0], "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for _, k := range replicas {
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, err := k.Token(context.Background(), demo, r, policy)
				if err != nil || tok.AccessToken != "at-1" {
					bad.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if r.count() != 1 || bad.Load() != 0 {
		t.Fatalf("refreshes = %d (%v), failed = %d; want 1 and 0", r.count(), r.calls, bad.Load())
	}
}

func TestCASConflictRereads(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := &countingStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Minute))
	clk.Add(2 * time.Minute)
	// A reconnect lands between our refresh and our write.
	var once sync.Once
	st.beforePut = func(p string) {
		if p != "tokens/demo" {
			return
		}
		once.Do(func() {
			other := NewKeeper(Options{Store: st.Store, Now: clk.Now, Cache: NewCache()})
			if _, err := other.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-reconnected", RefreshToken: "rt-r", Expiry: clk.Now().Add(time.Hour)}, ""); err != nil {
				t.Error(err)
			}
		})
	}
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "at-reconnected" {
		t.Fatalf("Token = %q, %v; want the reconnected token", tok.AccessToken, err)
	}
	e, _ := st.Store.Get(context.Background(), "tokens/demo")
	if e.Data["access_token"] != "at-reconnected" {
		t.Fatalf("store holds %q; the reconnect was overwritten", e.Data["access_token"])
	}
}

func TestRejected(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	ctx := context.Background()
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))

	// A 401 for the current token refreshes once.
	tok, err := k.Rejected(ctx, demo, r, policy, "at-0")
	if err != nil || tok.AccessToken != "at-1" || r.count() != 1 {
		t.Fatalf("Rejected(current) = %q, %v after %d refreshes", tok.AccessToken, err, r.count())
	}
	// A late 401 for the old token retries with the current one, no refresh.
	tok, err = k.Rejected(ctx, demo, r, policy, "at-0")
	if err != nil || tok.AccessToken != "at-1" || r.count() != 1 {
		t.Fatalf("Rejected(old) = %q, %v after %d refreshes", tok.AccessToken, err, r.count())
	}
	// Within the cooldown, a 401 for the new token passes through.
	if _, err := k.Rejected(ctx, demo, r, policy, "at-1"); !errors.Is(err, ErrNoRetry) || r.count() != 1 {
		t.Fatalf("Rejected in cooldown: err = %v after %d refreshes", err, r.count())
	}
	// An endpoint that always answers 401 costs one refresh per cooldown.
	for i := range 10 {
		clk.Add(10 * time.Second)
		cur, _ := k.Token(ctx, demo, r, policy)
		k.Rejected(ctx, demo, r, policy, cur.AccessToken)
		_ = i
	}
	if got := r.count(); got < 3 || got > 5 {
		t.Fatalf("100 s of constant 401s caused %d refreshes; want one per 30 s cooldown", got)
	}
}

func TestTokenWithoutExpiry(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := NewKeeper(Options{Store: newFileStore(t), Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	seed(t, k, "notion-at", "", time.Time{})
	clk.Add(365 * 24 * time.Hour)
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "notion-at" || r.count() != 0 {
		t.Fatalf("Token = %q, %v, %d refreshes", tok.AccessToken, err, r.count())
	}
	// Nothing to refresh with: the 401 passes through.
	if _, err := k.Rejected(context.Background(), demo, r, policy, "notion-at"); !errors.Is(err, ErrNoRetry) && !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("Rejected without refresh token: %v", err)
	}
}

func TestMissingConnection(t *testing.T) {
	st := &countingStore{Store: newFileStore(t)}
	k := NewKeeper(Options{Store: st})
	r := &scriptedRefresher{}
	for range 100 {
		if _, err := k.Token(context.Background(), demo, r, policy); !errors.Is(err, ErrAuthorizationRequired) {
			t.Fatalf("err = %v", err)
		}
	}
	// The store is asked once, then the answer is cached briefly.
	if st.gets.Load() > 2 {
		t.Fatalf("100 requests for a missing connection made %d store reads", st.gets.Load())
	}
}

func TestDueAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		tok    Token
		margin time.Duration
		want   time.Time
	}{
		{"no expiry", Token{}, time.Minute, time.Time{}},
		{"margin", Token{Expiry: t0.Add(time.Hour), ObtainedAt: t0}, 5 * time.Minute, t0.Add(55 * time.Minute)},
		{"short lifetime caps margin", Token{Expiry: t0.Add(6 * time.Second), ObtainedAt: t0}, 5 * time.Minute, t0.Add(4 * time.Second)},
		{"unknown issue time", Token{Expiry: t0.Add(time.Hour)}, 5 * time.Minute, t0.Add(55 * time.Minute)},
	}
	for _, tt := range tests {
		if got := tt.tok.DueAt(tt.margin); !got.Equal(tt.want) {
			t.Errorf("%s: DueAt = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := record{tok: Token{AccessToken: "a", RefreshToken: "r", TokenType: "bearer", Scope: "x y", Expiry: t0, RefreshExpiry: t0.Add(time.Hour), ObtainedAt: t0, ConnectedAt: t0, ConnectedBy: "alice", Generation: "g1"},
		lease: lease{holder: "h", until: t0.Add(1500 * time.Millisecond)}}
	out, err := parseRecord(in.fields())
	if err != nil || out != in {
		t.Fatalf("round trip = %+v, %v", out, err)
	}
	m := in.fields()
	m["schema"] = "9"
	if _, err := parseRecord(m); err == nil {
		t.Fatal("unknown schema version accepted")
	}
	if _, ok := (record{tok: Token{AccessToken: "a"}}).fields()["expiry"]; ok {
		t.Fatal("unknown expiry written")
	}
	// A marked record keeps who connected, why and since when; no secret.
	marked := record{tok: in.tok, state: NeedsAuthorization, reason: "refused", since: t0}
	f := marked.fields()
	for _, secret := range []string{"access_token", "refresh_token", "lease_holder"} {
		if _, ok := f[secret]; ok {
			t.Fatalf("marked record carries %s", secret)
		}
	}
	back, err := parseRecord(f)
	if err != nil || back.state != NeedsAuthorization || back.reason != "refused" || !back.since.Equal(t0) || back.tok.ConnectedBy != "alice" || back.tok.Generation != "g1" {
		t.Fatalf("marked record read back as %+v, %v", back, err)
	}
}

func TestFromOAuth2RefreshExpiry(t *testing.T) {
	t0 := time.Now()
	ot := (&oauth2.Token{AccessToken: "a", RefreshToken: "r"}).WithExtra(map[string]any{"refresh_token_expires_in": float64(600), "scope": "s"})
	got := FromOAuth2(ot, Token{}, t0)
	if !got.RefreshExpiry.Equal(t0.Add(10*time.Minute)) || got.Scope != "s" {
		t.Fatalf("got %+v", got)
	}
}

func TestKeyValidate(t *testing.T) {
	for _, k := range []Key{{Connector: ""}, {Connector: ".."}, {Connector: "a/b"}, {Connector: "a", Subject: ".."}, {Connector: "a", Subject: "x//y"}, {Connector: "a", Subject: "/y"}, {Connector: "a", Subject: "x/"}, {Connector: "a", Subject: "x/../y"}, {Connector: "a", Subject: "\n"}} {
		if k.Validate() == nil {
			t.Errorf("Key %+v accepted", k)
		}
	}
	if err := (Key{Connector: "demo", Subject: "alice@example.com"}).Validate(); err != nil {
		t.Fatal(err)
	}
	// Composite subjects are one escaped segment, and escaping keeps
	// distinct subjects apart.
	paths := map[string]string{}
	for _, sub := range []string{"acme/alice", "acme%2Falice", "acme alice", "acme+alice"} {
		k := Key{Connector: "demo", Subject: sub}
		if err := k.Validate(); err != nil {
			t.Fatalf("%q: %v", sub, err)
		}
		p := k.tokenPath()
		if strings.Count(p, "/") != 2 {
			t.Fatalf("%q stored at %q: not one segment", sub, p)
		}
		if other, dup := paths[p]; dup {
			t.Fatalf("%q and %q share %q", sub, other, p)
		}
		paths[p] = sub
	}
}

func TestBoundedCache(t *testing.T) {
	st := &countingStore{Store: newFileStore(t)}
	cache := NewBoundedCache(50)
	k := NewKeeper(Options{Store: st, Cache: cache})
	hot := Key{Connector: "demo", Subject: "hot"}
	if _, err := k.Save(context.Background(), hot, &oauth2.Token{AccessToken: "at-hot", Expiry: time.Now().Add(time.Hour)}, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		key := Key{Connector: "demo", Subject: fmt.Sprint("user-", i)}
		if _, err := k.Save(context.Background(), key, &oauth2.Token{AccessToken: fmt.Sprint("at-", i), Expiry: time.Now().Add(time.Hour)}, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Token(context.Background(), hot, nil, policy); err != nil { // keeps "hot" in use
			t.Fatal(err)
		}
		if cache.Len() > 50 {
			t.Fatalf("cache holds %d connections, bound is 50", cache.Len())
		}
	}
	// The connection in constant use was never evicted: no store read.
	gets := st.gets.Load()
	if tok, err := k.Token(context.Background(), hot, nil, policy); err != nil || tok.AccessToken != "at-hot" || st.gets.Load() != gets {
		t.Fatalf("hot connection: %q, %v, %d store reads", tok.AccessToken, err, st.gets.Load()-gets)
	}
	// An evicted one is read back from the store.
	if tok, err := k.Token(context.Background(), Key{Connector: "demo", Subject: "user-0"}, nil, policy); err != nil || tok.AccessToken != "at-0" {
		t.Fatalf("evicted connection: %q, %v", tok.AccessToken, err)
	}
}

// TestUpgradeV1Record reads a token record as the first release wrote it
// (testdata/record-v1.json: no schema, no connection metadata), refreshes
// it, and finds it written back as version 3.
func TestUpgradeV1Record(t *testing.T) {
	b, err := os.ReadFile("testdata/record-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var v1 map[string]string
	if err := json.Unmarshal(b, &v1); err != nil {
		t.Fatal(err)
	}
	st := newFileStore(t)
	if _, err := st.Put(context.Background(), "tokens/demo", v1, 0); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || tok.AccessToken != "ory_at_v1-record-access" || tok.Scope != "openid offline_access" || !tok.ConnectedAt.IsZero() {
		t.Fatalf("v1 record read as %+v, %v", tok, err)
	}
	clk.Add(time.Hour) // expired: refresh and write back
	if tok, err = k.Token(context.Background(), demo, r, policy); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("refresh of a v1 record: %q, %v", tok.AccessToken, err)
	}
	if r.calls[0] != "ory_rt_v1-record-refresh" {
		t.Fatalf("refreshed with %q", r.calls[0])
	}
	e, _ := st.Get(context.Background(), "tokens/demo")
	if e.Data["schema"] != "3" || e.Data["obtained_at"] == "" || e.Data["scope"] != "openid offline_access" {
		t.Fatalf("written back as %v", e.Data)
	}
}

func TestForceRefreshAndImport(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	r := &scriptedRefresher{answer: rotating(clk.Now)}
	ctx := context.Background()
	seed(t, k, "at-0", "rt-0", clk.Now().Add(time.Hour))
	tok, refreshed, err := k.ForceRefresh(ctx, demo, r)
	if err != nil || tok.AccessToken != "at-1" || !refreshed || r.count() != 1 {
		t.Fatalf("ForceRefresh of a fresh token = %q, %v, %v after %d refreshes", tok.AccessToken, refreshed, err, r.count())
	}
	// Import a refresh token from elsewhere: stored, redeemed at once.
	other := Key{Connector: "demo", Subject: "migrated"}
	tok, err = k.Import(ctx, other, "rt-from-elsewhere", "admin", r)
	if err != nil || tok.AccessToken != "at-2" || r.calls[1] != "rt-from-elsewhere" {
		t.Fatalf("Import = %q, %v; refresh calls %v", tok.AccessToken, err, r.calls)
	}
	e, _ := st.Get(ctx, "tokens/demo/migrated")
	if e.Data["access_token"] != "at-2" || e.Data["connected_by"] != "admin" {
		t.Fatalf("stored %v", e.Data)
	}
	// An import the provider refuses leaves nothing behind, and leaves
	// a working connection as it was.
	bad := &scriptedRefresher{answer: func(int, string) (*oauth2.Token, error) { return nil, fmt.Errorf("x: %w", connector.ErrGrantRejected) }}
	if _, err := k.Import(ctx, Key{Connector: "demo", Subject: "bad"}, "rt-bad", "", bad); !errors.Is(err, connector.ErrGrantRejected) {
		t.Fatalf("refused import: %v", err)
	}
	if _, err := st.Get(ctx, "tokens/demo/bad"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("refused import left a record: %v", err)
	}
	if _, err := k.Import(ctx, other, "rt-typo", "", bad); err == nil {
		t.Fatal("refused import succeeded")
	}
	if tok, err := k.Token(ctx, other, r, policy); err != nil || tok.AccessToken != "at-2" {
		t.Fatalf("after a refused import the connection serves %q, %v; want the previous at-2", tok.AccessToken, err)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Renew keeps the connection of the person who made it: the generation,
// connection time and metadata stay, the tokens change, and the store
// holds them. Another person's token set makes a new connection.
func TestRenewKeepsTheConnection(t *testing.T) {
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	k := NewKeeper(Options{Store: fs, Now: clk.Now})
	first, err := k.SaveWithMetadata(context.Background(), demo, &oauth2.Token{AccessToken: "at-0", RefreshToken: "rt-0", Expiry: clk.Now().Add(time.Hour)}, "alice", map[string]string{"tenant": "t1"})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	renewed, err := k.Renew(context.Background(), demo, &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1", Expiry: clk.Now().Add(time.Hour)}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Generation != first.Generation || renewed.ConnectedAt.Unix() != first.ConnectedAt.Unix() || renewed.Metadata.Len() != 1 || renewed.AccessToken != "at-1" {
		t.Fatalf("renewed: generation %q (was %q), connected %v (was %v), %d metadata, %q", renewed.Generation, first.Generation, renewed.ConnectedAt, first.ConnectedAt, renewed.Metadata.Len(), renewed.AccessToken)
	}
	if d := stored(t, fs, demo); d["refresh_token"] != "rt-1" {
		t.Fatalf("the store holds %q; want rt-1", d["refresh_token"])
	}
	if tok, err := k.Token(context.Background(), demo, nil, policy); err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("Token: %q, %v; want at-1", tok.AccessToken, err)
	}
	other, err := k.Renew(context.Background(), demo, &oauth2.Token{AccessToken: "at-2", RefreshToken: "rt-2", Expiry: clk.Now().Add(time.Hour)}, "bob")
	if err != nil || other.Generation == first.Generation || other.ConnectedBy != "bob" {
		t.Fatalf("another person's token set: generation %q (first %q), by %q, %v; want a new connection", other.Generation, first.Generation, other.ConnectedBy, err)
	}
}

// Renew loses nothing when the store fails or another replica writes the
// record meanwhile: a failed write leaves the stored connection and the
// cached token as they were (the error is the caller's to log), and a
// write that lost the check-and-set is made again over the newer record,
// still keeping the connection's generation and connection time.
func TestRenewUnderStoreFaults(t *testing.T) {
	save := func(t *testing.T, k *Keeper) Token {
		first, err := k.Save(context.Background(), demo, &oauth2.Token{AccessToken: "at-0", RefreshToken: "rt-0", Expiry: time.Now().Add(time.Hour)}, "alice")
		if err != nil {
			t.Fatal(err)
		}
		return first
	}
	renew := func(k *Keeper) (Token, error) {
		return k.Renew(context.Background(), demo, &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1", Expiry: time.Now().Add(time.Hour)}, "alice")
	}

	t.Run("store down", func(t *testing.T) {
		var down atomic.Bool
		fs := &faultStore{Store: newFileStore(t), failPut: func(string, int64) bool { return down.Load() }}
		k := NewKeeper(Options{Store: fs})
		first := save(t, k)
		down.Store(true)
		if _, err := renew(k); !errors.Is(err, errStoreDown) {
			t.Fatalf("Renew with the store down: %v; want the store's error", err)
		}
		if d := stored(t, fs, demo); d["refresh_token"] != "rt-0" || d["generation"] != first.Generation {
			t.Fatalf("the store holds %q of generation %q; want rt-0 of %q", d["refresh_token"], d["generation"], first.Generation)
		}
		if tok, err := k.Token(context.Background(), demo, nil, policy); err != nil || tok.AccessToken != "at-0" {
			t.Fatalf("Token: %q, %v; want the cached at-0", tok.AccessToken, err)
		}
	})

	t.Run("another replica writes first", func(t *testing.T) {
		inner := newFileStore(t)
		fs := &faultStore{Store: inner}
		k := NewKeeper(Options{Store: fs})
		first := save(t, k)
		var raced atomic.Bool
		fs.onPut = func() {
			if raced.Swap(true) {
				return
			}
			// Another replica's refresh lands between Renew's read and
			// its write.
			e, err := inner.Get(context.Background(), demo.tokenPath())
			if err != nil {
				t.Error(err)
				return
			}
			e.Data["refresh_token"] = "rt-replica"
			if _, err := inner.Put(context.Background(), demo.tokenPath(), e.Data, e.Version); err != nil {
				t.Error(err)
			}
		}
		puts := fs.puts.Load()
		renewed, err := renew(k)
		if err != nil {
			t.Fatal(err)
		}
		if n := fs.puts.Load() - puts; n != 2 {
			t.Fatalf("Renew wrote %d times; want 2 (the check-and-set lost once)", n)
		}
		d := stored(t, fs, demo)
		if d["refresh_token"] != "rt-1" || d["generation"] != first.Generation || renewed.Generation != first.Generation || renewed.ConnectedAt.Unix() != first.ConnectedAt.Unix() {
			t.Fatalf("the store holds %q of generation %q (renewed %q); want rt-1 of %q", d["refresh_token"], d["generation"], renewed.Generation, first.Generation)
		}
	})
}

// Renew racing another replica's refresh: the replica holds the lease and
// its refresh is at the provider when Renew writes the person's new token
// set. The connection survives both: it stays of its generation, the
// renewed set stays in the store (the refresh's write loses the
// check-and-set and takes the newer record, as after any other replica's
// refresh), and both replicas attach it without asking for authorization.
func TestRenewWhileAnotherReplicaRefreshes(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	fs := newFileStore(t)
	a := NewKeeper(Options{Store: fs, Now: clk.Now})
	b := NewKeeper(Options{Store: fs, Now: clk.Now})
	first, err := a.Save(ctx, demo, &oauth2.Token{AccessToken: "at-0", RefreshToken: "rt-0", Expiry: clk.Now().Add(-time.Minute)}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	held := &heldRefresher{now: clk.Now, release: make(chan struct{})}
	type answer struct {
		tok Token
		err error
	}
	done := make(chan answer)
	go func() {
		tok, err := a.Token(ctx, demo, held, policy)
		done <- answer{tok, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); held.inFlight() == 0; time.Sleep(time.Millisecond) {
		select {
		case got := <-done:
			t.Fatalf("Token answered %q, %v before refreshing", got.tok.AccessToken, got.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no refresh reached the provider")
		}
	}
	renewed, err := b.Renew(ctx, demo, &oauth2.Token{AccessToken: "at-obo", RefreshToken: "rt-obo", Expiry: clk.Now().Add(time.Hour)}, "alice")
	if err != nil || renewed.Generation != first.Generation {
		t.Fatalf("Renew during the refresh: generation %q (want %q), %v", renewed.Generation, first.Generation, err)
	}
	close(held.release)
	got := <-done
	if got.err != nil || got.tok.AccessToken != "at-obo" {
		t.Fatalf("the refreshing replica's request: %q, %v; want the renewed at-obo", got.tok.AccessToken, got.err)
	}
	d := stored(t, fs, demo)
	if d["generation"] != first.Generation || d["refresh_token"] != "rt-obo" {
		t.Fatalf("the store holds %q of generation %q; want rt-obo of %q", d["refresh_token"], d["generation"], first.Generation)
	}
	clk.Add(2 * time.Minute) // past any backoff, within the new tokens' hour
	for name, k := range map[string]*Keeper{"refreshing replica": a, "renewing replica": b} {
		tok, err := k.Token(ctx, demo, held, policy)
		if err != nil || tok.AccessToken != "at-obo" {
			t.Errorf("%s afterwards: %q, %v; want at-obo", name, tok.AccessToken, err)
		}
	}
	if n := held.n.Load(); n != 1 {
		t.Errorf("%d refreshes at the provider; want 1", n)
	}
}
