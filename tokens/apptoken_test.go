package tokens

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
)

// appSource counts client credentials requests; gate, when set, holds
// them until closed; fail makes them fail with that error.
type appSource struct {
	calls atomic.Int64
	gate  chan struct{}
	life  time.Duration
	fail  error
	now   func() time.Time // nil: time.Now
}

func (s *appSource) ClientCredentials(ctx context.Context) (*oauth2.Token, error) {
	n := s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	if s.fail != nil {
		return nil, s.fail
	}
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	return &oauth2.Token{AccessToken: fmt.Sprintf("app-%d", n), Expiry: now().Add(s.life)}, nil
}

func newClock() *clock { return &clock{t: time.Now()} }

func appPolicy(margin time.Duration) Policy { return Policy{Margin: margin, MaxWait: 5 * time.Second} }

func TestAppTokenSingleFlight(t *testing.T) {
	src := &appSource{gate: make(chan struct{}), life: time.Hour}
	a := NewAppToken(nil)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := a.Token(context.Background(), src, appPolicy(5*time.Minute)); err != nil || tok.AccessToken != "app-1" {
				bad.Add(1)
			}
		}()
	}
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(src.gate)
	wg.Wait()
	if n := src.calls.Load(); n != 1 || bad.Load() != 0 {
		t.Fatalf("500 concurrent requests: %d token requests, %d failures; want 1 and 0", n, bad.Load())
	}
	if st := a.State(); !st.Held || st.LastError != "" {
		t.Errorf("state %+v", st)
	}
}

func TestAppTokenMargin(t *testing.T) {
	c := newClock()
	src := &appSource{life: 30 * time.Minute, now: c.Now}
	a := NewAppToken(c.Now)
	p := appPolicy(5 * time.Minute)
	get := func() string {
		t.Helper()
		tok, err := a.Token(context.Background(), src, p)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	get()
	c.Add(20 * time.Minute)
	if got := get(); got != "app-1" || src.calls.Load() != 1 {
		t.Fatalf("before the margin: %s after %d requests", got, src.calls.Load())
	}
	// Within the margin: the held token answers while another is fetched.
	c.Add(6 * time.Minute)
	if got := get(); got != "app-1" {
		t.Fatalf("within the margin: %s", got)
	}
	for src.calls.Load() < 2 || !a.State().ObtainedAt.Equal(c.Now()) {
		time.Sleep(time.Millisecond)
	}
	if got := get(); got != "app-2" {
		t.Fatalf("after the background fetch: %s", got)
	}

	// A short-lived token is due a third before its end, not 5m before.
	short := &appSource{life: 90 * time.Second, now: c.Now}
	b := NewAppToken(c.Now)
	b.Token(context.Background(), short, p)
	c.Add(50 * time.Second)
	b.Token(context.Background(), short, p)
	if short.calls.Load() != 1 {
		t.Fatalf("a 90s token was fetched again after 50s")
	}
}

func TestAppTokenRefused(t *testing.T) {
	c := newClock()
	refused := fmt.Errorf("connector x: %w: %w", connector.ErrClientRejected, &connector.ProviderError{Status: 401, Code: "invalid_client"})
	src := &appSource{fail: refused}
	a := NewAppToken(c.Now)
	for range 20 {
		_, err := a.Token(context.Background(), src, appPolicy(time.Minute))
		var ue *UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, ErrMisconfigured) || ProviderCode(err) != "invalid_client" || ue.RetryAfter <= 0 {
			t.Fatalf("refused: %v", err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("20 requests during the backoff made %d token requests, want 1", n)
	}
	if st := a.State(); st.Held || st.LastError != "invalid_client" {
		t.Errorf("state %+v", st)
	}
	// After the backoff it is tried again, and a success clears it.
	c.Add(2 * time.Second)
	src.fail = nil
	src.life, src.now = time.Hour, c.Now
	if _, err := a.Token(context.Background(), src, appPolicy(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st := a.State(); !st.Held || st.LastError != "" {
		t.Errorf("state after recovery %+v", st)
	}
	// An upstream 401 drops the token once per cooldown.
	tok, _ := a.Token(context.Background(), src, appPolicy(time.Minute))
	a.Rejected(tok.AccessToken, time.Minute)
	if next, _ := a.Token(context.Background(), src, appPolicy(time.Minute)); next.AccessToken != tok.AccessToken {
		t.Errorf("a token obtained within the cooldown was dropped")
	}
	c.Add(time.Minute)
	a.Rejected(tok.AccessToken, time.Minute)
	if next, _ := a.Token(context.Background(), src, appPolicy(time.Minute)); next.AccessToken == tok.AccessToken {
		t.Errorf("the rejected token was kept")
	}
}

func jwtWithExp(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"sub":"alice","exp":%d}`, exp.Unix())) + ".sig"
}

func TestExchangesOncePerIncomingToken(t *testing.T) {
	c := newClock()
	x := NewExchanges(0, 0, c.Now)
	var calls atomic.Int64
	gate := make(chan struct{})
	exchange := func(in string) func(context.Context) (*oauth2.Token, error) {
		return func(context.Context) (*oauth2.Token, error) {
			n := calls.Add(1)
			<-gate
			return &oauth2.Token{AccessToken: fmt.Sprintf("for-%s-%d", in, n), Expiry: c.Now().Add(time.Hour)}, nil
		}
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 300 {
		in := fmt.Sprintf("user-%d", i%3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := x.Token(context.Background(), in, appPolicy(5*time.Minute), exchange(in))
			if err != nil || len(tok.AccessToken) < 10 || tok.AccessToken[4:10] != in {
				bad.Add(1)
			}
		}()
	}
	for calls.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if calls.Load() != 3 || bad.Load() != 0 {
		t.Fatalf("300 requests with 3 incoming tokens: %d exchanges, %d wrong answers", calls.Load(), bad.Load())
	}
	// An opaque incoming token's exchange is kept the default TTL.
	c.Add(DefaultOpaqueTTL - time.Second)
	x.Token(context.Background(), "user-0", appPolicy(5*time.Minute), exchange("user-0"))
	if calls.Load() != 3 {
		t.Fatalf("exchanged again within the TTL")
	}
	c.Add(2 * time.Second)
	x.Token(context.Background(), "user-0", appPolicy(5*time.Minute), exchange("user-0"))
	if calls.Load() != 4 {
		t.Fatalf("not exchanged again after the TTL")
	}
}

func TestExchangesBounds(t *testing.T) {
	c := newClock()
	x := NewExchanges(2, time.Hour, c.Now)
	var calls atomic.Int64
	ex := func(context.Context) (*oauth2.Token, error) {
		calls.Add(1)
		return &oauth2.Token{AccessToken: "x", Expiry: c.Now().Add(time.Hour)}, nil
	}
	p := appPolicy(5 * time.Minute)
	// A JWT's exp ends the entry before the exchanged token does.
	jwt := jwtWithExp(c.Now().Add(10 * time.Minute))
	x.Token(context.Background(), jwt, p, ex)
	c.Add(9 * time.Minute)
	x.Token(context.Background(), jwt, p, ex)
	if calls.Load() != 1 {
		t.Fatal("exchanged again before the incoming token's exp")
	}
	c.Add(2 * time.Minute)
	x.Token(context.Background(), jwt, p, ex)
	if calls.Load() != 2 {
		t.Fatal("the exchange outlived the incoming token")
	}
	// At most 2 entries: the least recently used goes.
	x.Token(context.Background(), "a", p, ex)
	x.Token(context.Background(), "b", p, ex)
	if x.Len() != 2 {
		t.Fatalf("%d entries, want 2", x.Len())
	}
	before := calls.Load()
	x.Token(context.Background(), "a", p, ex) // kept
	x.Token(context.Background(), jwt, p, ex) // evicted by b
	if calls.Load() != before+1 {
		t.Fatalf("LRU: %d exchanges, want 1", calls.Load()-before)
	}
	// The cache never holds the incoming token itself.
	x.mu.Lock()
	for el := x.lru.Front(); el != nil; el = el.Next() {
		if fmt.Sprint(el.Value) == "a" {
			t.Error("an incoming token is kept")
		}
	}
	x.mu.Unlock()
	// Failures are returned, not kept.
	refused := errors.New("refused")
	_, err := x.Token(context.Background(), "bad", p, func(context.Context) (*oauth2.Token, error) { return nil, refused })
	if !errors.Is(err, refused) || x.Len() != 2 {
		t.Fatalf("refused: %v, %d entries", err, x.Len())
	}
}
