package tokens

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Exchanges holds the tokens obtained by exchanging the tokens apps send
// (on-behalf-of, token exchange), one per incoming token, in memory. An
// entry is named by the SHA-256 of the incoming token, never the token
// itself, and lives until the earlier of both tokens' ends: the exchanged
// token's refresh margin (capped at a third of its lifetime) and the
// incoming token's exp when it is a JWT (else a short default, since an
// opaque token's end is unknown). At most Max entries are kept; the least
// recently used goes first. Each incoming token is exchanged once at a time
// in this process.
type Exchanges struct {
	group singleflight.Group
	now   func() time.Time
	max   int
	ttl   time.Duration

	mu    sync.Mutex
	lru   *list.List // of *exchanged, most recently used first
	index map[[sha256.Size]byte]*list.Element
}

type exchanged struct {
	key   [sha256.Size]byte
	tok   Token
	until time.Time
}

// Defaults of Exchanges.
const (
	// DefaultMaxExchanges bounds the exchanged tokens kept.
	DefaultMaxExchanges = 10000
	// DefaultOpaqueTTL is how long an exchanged token is kept for an
	// incoming token whose expiry cannot be read (not a JWT).
	DefaultOpaqueTTL = time.Minute
)

// NewExchanges makes an empty cache of at most max entries (0: the
// default), keeping the exchange of an opaque incoming token at most ttl
// (0: the default). now is the clock (nil: time.Now).
func NewExchanges(max int, ttl time.Duration, now func() time.Time) *Exchanges {
	if max <= 0 {
		max = DefaultMaxExchanges
	}
	if ttl <= 0 {
		ttl = DefaultOpaqueTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Exchanges{now: now, max: max, ttl: ttl, lru: list.New(), index: map[[sha256.Size]byte]*list.Element{}}
}

// Len returns how many exchanged tokens are held.
func (x *Exchanges) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.lru.Len()
}

// Token returns the token exchanged for incoming: the cached one while it
// lasts, else the result of exchange, which is called once for all
// concurrent requests with the same incoming token, on a context detached
// from any one of them. The caller waits at most the policy's MaxWait.
// exchange's error is returned as it is (not cached): a refused token is
// asked about again on its next use.
func (x *Exchanges) Token(ctx context.Context, incoming string, p Policy, exchange func(context.Context) (*oauth2.Token, error)) (Token, error) {
	key := sha256.Sum256([]byte(incoming))
	if tok, ok := x.get(key); ok {
		return tok, nil
	}

	end := incomingExpiry(incoming)
	ch := x.group.DoChan(hex.EncodeToString(key[:]), func() (any, error) {
		if tok, ok := x.get(key); ok {
			return tok, nil // a flight that ended just before this one began
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultTokenTimeout)
		defer cancel()
		ot, err := exchange(ctx)
		if err != nil {
			return nil, err
		}
		now := x.now()
		tok := FromOAuth2(ot, Token{}, now)
		tok.RefreshToken, tok.RefreshExpiry = "", time.Time{} // kept, if at all, by the caller
		until := tok.DueAt(p.Margin)
		if until.IsZero() {
			until = now.Add(x.ttl)
		}
		if end.IsZero() {
			end = now.Add(x.ttl)
		}
		if end.Before(until) {
			until = end
		}
		x.put(key, tok, until)
		return tok, nil
	})
	timer := time.NewTimer(p.maxWait())
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return Token{}, res.Err
		}
		return res.Val.(Token), nil
	case <-timer.C:
		return Token{}, &UnavailableError{RetryAfter: time.Second, Err: errWaited}
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// get returns the token kept for key, if it still lasts.
func (x *Exchanges) get(key [sha256.Size]byte) (Token, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	el, ok := x.index[key]
	if !ok {
		return Token{}, false
	}
	e := el.Value.(*exchanged)
	if !x.now().Before(e.until) {
		x.removeLocked(el)
		return Token{}, false
	}
	x.lru.MoveToFront(el)
	return e.tok, true
}

// put keeps tok for key until until, evicting the least recently used
// entries beyond the bound.
func (x *Exchanges) put(key [sha256.Size]byte, tok Token, until time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if el, ok := x.index[key]; ok {
		x.removeLocked(el)
	}
	x.index[key] = x.lru.PushFront(&exchanged{key: key, tok: tok, until: until})
	for x.lru.Len() > x.max {
		x.removeLocked(x.lru.Back())
	}
}

func (x *Exchanges) removeLocked(el *list.Element) {
	delete(x.index, el.Value.(*exchanged).key)
	x.lru.Remove(el)
}

// incomingExpiry reads the exp claim of a JWT without verifying it: it only
// shortens how long an exchange is kept, and the provider verified the
// token when it exchanged it. Zero if the token is not a JWT with an exp.
func incomingExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 16<<10 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}
	}
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(secs), 0)
}
