package tokens

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Store is what the Keeper needs of a kv.Store.
type Store interface {
	Get(ctx context.Context, path string) (kv.Entry, error)
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
	Delete(ctx context.Context, path string) error
}

// Refresher redeems a refresh token; *connector.Connector is one.
type Refresher interface {
	Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error)
}

// Policy is a connection's refresh policy.
type Policy struct {
	// Margin is how long before expiry a token is refreshed.
	Margin time.Duration
	// Cooldown is the least time between two refreshes triggered by
	// upstream 401s.
	Cooldown time.Duration
}

// ErrAuthorizationRequired means the connection has no usable token and none
// can be obtained without a user authorizing again.
var ErrAuthorizationRequired = errors.New("authorization required")

// ErrNoRetry is returned by Rejected when a 401 should be passed through
// rather than retried.
var ErrNoRetry = errors.New("no fresher token to retry with")

// UnavailableError means no usable token is at hand for now, for a reason
// that may pass (the token endpoint or the store failing).
type UnavailableError struct {
	// RetryAfter is a suggested wait.
	RetryAfter time.Duration
	// Err is the cause.
	Err error
}

func (e *UnavailableError) Error() string { return "token unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Observer hears about the token lifecycle (for metrics and events). The
// Keeper calls it synchronously: it must be quick and must not call back.
type Observer interface {
	// Refreshed reports a refresh attempt: trigger is "proactive" (due or
	// expired), "401" or "admin"; outcome is "ok", "invalid_grant" (the
	// connection now needs authorization) or "transient".
	Refreshed(key Key, trigger, outcome string)
}

type noObserver struct{}

func (noObserver) Refreshed(Key, string, string) {}

// Cache is the in-memory state that outlives a configuration: cached tokens,
// in-flight refreshes, 401 cooldowns and last errors. Share one Cache between
// the Keepers of successive configurations that use the same store.
type Cache struct {
	mu      sync.RWMutex
	entries map[Key]*entry
	flight  singleflight.Group
	max     int
}

type entry struct {
	tok       Token
	version   int
	missingAt time.Time // set when the store had no token (negative entry)
	forcedAt  time.Time // last refresh triggered by a 401
	lastErr   string    // last refresh failure, safe to show
	lastErrAt time.Time
	used      uint32 // set on every hit, cleared by eviction passes
}

// DefaultMaxConnections bounds a Cache made by NewCache.
const DefaultMaxConnections = 100_000

// NewCache makes an empty Cache of at most DefaultMaxConnections.
func NewCache() *Cache { return NewBoundedCache(DefaultMaxConnections) }

// NewBoundedCache makes an empty Cache that holds at most max connections:
// beyond that, the connections not used since the previous eviction pass
// are dropped first (they are read again from the store when next used).
func NewBoundedCache(max int) *Cache {
	return &Cache{entries: make(map[Key]*entry), max: max}
}

// entryLocked returns the entry of key, creating it (and making room for
// it) if needed. c.mu must be held for writing.
func (c *Cache) entryLocked(key Key) *entry {
	e := c.entries[key]
	if e == nil {
		if len(c.entries) >= c.max {
			c.evictLocked()
		}
		e = &entry{}
		c.entries[key] = e
	}
	return e
}

// evictLocked drops the entries unused since the last pass, and then, if
// that freed too little, any entries, until a tenth of the room is free.
func (c *Cache) evictLocked() {
	for k, e := range c.entries {
		if atomic.SwapUint32(&e.used, 0) == 0 {
			delete(c.entries, k)
		}
	}
	target := c.max - c.max/10
	for k := range c.entries {
		if len(c.entries) <= target {
			break
		}
		delete(c.entries, k)
	}
}

// ConnectionState is what the cache knows of one connection, for metrics.
type ConnectionState struct {
	Key Key
	// Connected is false for a connection known to have no token.
	Connected bool
	// Expiry is the cached access token's expiry (zero if unknown).
	Expiry time.Time
}

// Each calls f with the state of every cached connection.
func (c *Cache) Each(f func(ConnectionState)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k, e := range c.entries {
		f(ConnectionState{Key: k, Connected: e.missingAt.IsZero() && e.tok.AccessToken != "", Expiry: e.tok.Expiry})
	}
}

// Len returns the number of cached connections.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Keeper keeps tokens for one configuration.
type Keeper struct {
	bgWork sync.WaitGroup // background refreshes started by this Keeper

	cache *Cache
	store Store
	obs   Observer
	log   *zap.Logger
	now   func() time.Time
	bg    context.Context

	leaseTTL    time.Duration
	leaseWait   time.Duration
	missingTTL  time.Duration
	refreshTime time.Duration
}

// Options configure a Keeper. Only Store is required.
type Options struct {
	Cache *Cache
	Store Store
	// Logger receives operational logs; never a secret.
	Logger *zap.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Context bounds background refreshes (default: never cancelled).
	Context context.Context
	// LeaseTTL is how long a refresh lease lasts (default 30s).
	LeaseTTL time.Duration
	// LeaseWait is how long a caller waits for another replica's refresh
	// before giving up with an UnavailableError (default 15s).
	LeaseWait time.Duration
	// Observer hears about refreshes (default: nobody).
	Observer Observer
}

// NewKeeper makes a Keeper.
func NewKeeper(o Options) *Keeper {
	k := &Keeper{
		cache: o.Cache, store: o.Store, obs: o.Observer, log: o.Logger, now: o.Now, bg: o.Context,
		leaseTTL: o.LeaseTTL, leaseWait: o.LeaseWait,
		missingTTL: 2 * time.Second, refreshTime: 25 * time.Second,
	}
	if k.cache == nil {
		k.cache = NewCache()
	}
	if k.log == nil {
		k.log = zap.NewNop()
	}
	if k.obs == nil {
		k.obs = noObserver{}
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.bg == nil {
		k.bg = context.Background()
	}
	if k.leaseTTL == 0 {
		k.leaseTTL = 30 * time.Second
	}
	if k.leaseWait == 0 {
		k.leaseWait = 15 * time.Second
	}
	return k
}

// get returns a copy of the cached entry, if any.
func (c *Cache) get(key Key) (entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.entries[key]
	if e == nil {
		return entry{}, false
	}
	atomic.StoreUint32(&e.used, 1)
	// Every field but used, which other readers set concurrently.
	return entry{tok: e.tok, version: e.version, missingAt: e.missingAt, forcedAt: e.forcedAt,
		lastErr: e.lastErr, lastErrAt: e.lastErrAt}, true
}

// Token returns a usable access token for the connection. While the cached
// token is fresh this touches neither the store nor the network. A token
// that is due for refresh but still valid is returned at once while a
// refresh runs in the background; an expired one waits for the refresh.
func (k *Keeper) Token(ctx context.Context, key Key, r Refresher, p Policy) (Token, error) {
	now := k.now()
	if e, ok := k.cache.get(key); ok {
		if !e.missingAt.IsZero() {
			if now.Sub(e.missingAt) < k.missingTTL {
				return Token{}, ErrAuthorizationRequired
			}
		} else if !e.tok.due(now, p.Margin) && e.tok.AccessToken != "" {
			return e.tok, nil
		} else if e.tok.Usable(now) {
			k.cache.flight.DoChan(key.String(), func() (any, error) {
				k.bgWork.Add(1)
				defer k.bgWork.Done()
				return k.load(k.bg, key, r, p, "", "proactive")
			})
			return e.tok, nil
		}
	}
	return k.do(ctx, key, r, p, "", "proactive")
}

// Wait waits for the background refreshes this Keeper started.
func (k *Keeper) Wait() { k.bgWork.Wait() }

// Rejected is called when the upstream answered 401 to a request sent with
// the access token rejected. It returns the token to retry with, or
// ErrNoRetry when the 401 should be passed through: a fresher token is
// already cached (returned without a refresh), else a refresh is made unless
// one triggered by a 401 happened less than the cooldown ago.
func (k *Keeper) Rejected(ctx context.Context, key Key, r Refresher, p Policy, rejected string) (Token, error) {
	now := k.now()
	k.cache.mu.Lock()
	e := k.cache.entries[key]
	if e != nil && e.missingAt.IsZero() && e.tok.AccessToken != rejected && e.tok.Usable(now) {
		k.cache.mu.Unlock()
		return e.tok, nil
	}
	if e != nil && !e.forcedAt.IsZero() && now.Sub(e.forcedAt) < p.Cooldown {
		k.cache.mu.Unlock()
		return Token{}, ErrNoRetry
	}
	if e == nil {
		e = k.cache.entryLocked(key)
	}
	e.forcedAt = now
	k.cache.mu.Unlock()

	tok, err := k.do(ctx, key, r, p, rejected, "401")
	if err != nil {
		return Token{}, err
	}
	if tok.AccessToken == rejected {
		return Token{}, ErrNoRetry
	}
	return tok, nil
}

// ForceRefresh refreshes the connection now, whatever its expiry (for
// operators: the admin API).
func (k *Keeper) ForceRefresh(ctx context.Context, key Key, r Refresher) (Token, error) {
	cur, _, err := k.read(ctx, key)
	if err != nil {
		return Token{}, err
	}
	// Treated as rejected: refreshed unless another replica rotated it
	// meanwhile. A record without an access token (an import) is not
	// usable, so it is refreshed by the usual rule.
	return k.do(ctx, key, r, Policy{}, cur.AccessToken, "admin")
}

// Import stores a refresh token obtained elsewhere (migrating from another
// system) as the connection's, replacing what it held, and redeems it at
// once: the connection is usable if that succeeds.
func (k *Keeper) Import(ctx context.Context, key Key, refreshToken, connectedBy string, r Refresher) (Token, error) {
	if refreshToken == "" {
		return Token{}, errors.New("no refresh token to import")
	}
	if _, err := k.Save(ctx, key, &oauth2.Token{RefreshToken: refreshToken}, connectedBy); err != nil {
		return Token{}, err
	}
	return k.ForceRefresh(ctx, key, r)
}

// do runs load once per connection at a time; callers that arrive while it
// runs share its result. The work is detached from the caller's
// cancellation, so one impatient client does not fail everybody's refresh.
func (k *Keeper) do(ctx context.Context, key Key, r Refresher, p Policy, rejected, trigger string) (Token, error) {
	ch := k.cache.flight.DoChan(key.String(), func() (any, error) {
		return k.load(context.WithoutCancel(ctx), key, r, p, rejected, trigger)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return Token{}, res.Err
		}
		return res.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// load reads the connection from the store and refreshes it if it must.
// rejected, if not empty, is an access token the upstream refused: it is
// refreshed even if not due.
func (k *Keeper) load(ctx context.Context, key Key, r Refresher, p Policy, rejected, trigger string) (Token, error) {
	ctx, cancel := context.WithTimeout(ctx, k.leaseWait+k.refreshTime)
	defer cancel()
	deadline := k.now().Add(k.leaseWait)
	wait := 50 * time.Millisecond
	for {
		tok, version, err := k.read(ctx, key)
		if err != nil {
			return Token{}, err
		}
		now := k.now()
		if !k.wants(tok, now, p, rejected) {
			k.remember(key, tok, version)
			return tok, nil
		}
		if !tok.Refreshable(now) {
			return k.cannotRefresh(key, tok, version, now)
		}
		l, err := k.tryLease(ctx, key)
		if errors.Is(err, errLeaseHeld) {
			if k.now().After(deadline) {
				return k.transient(key, tok, version, fmt.Errorf("waiting for another replica's refresh: %w", err))
			}
			sleep(ctx, wait)
			wait = min(wait*2, time.Second)
			continue
		}
		if err != nil {
			return k.transient(key, tok, version, fmt.Errorf("taking refresh lease: %w", err))
		}
		tok, err, retry := k.refreshHolding(ctx, key, r, p, rejected, trigger, l)
		if retry {
			continue
		}
		return tok, err
	}
}

// refreshHolding refreshes while holding the lease: it re-reads the token
// (another replica may have rotated it before we got the lease), refreshes,
// and writes the result at the version it read. retry means "read again".
func (k *Keeper) refreshHolding(ctx context.Context, key Key, r Refresher, p Policy, rejected, trigger string, l *lease) (Token, error, bool) {
	defer k.release(context.WithoutCancel(ctx), l)
	tok, version, err := k.read(ctx, key)
	if err != nil {
		return Token{}, err, false
	}
	now := k.now()
	if !k.wants(tok, now, p, rejected) {
		k.remember(key, tok, version)
		return tok, nil, false
	}
	ot, err := r.Refresh(ctx, tok.RefreshToken)
	if errors.Is(err, connector.ErrGrantRejected) {
		k.obs.Refreshed(key, trigger, "invalid_grant")
		k.log.Warn("refresh rejected by provider; the connection needs authorization",
			zap.String("connection", key.String()), errField(err))
		if derr := k.store.Delete(ctx, key.tokenPath()); derr != nil {
			k.log.Error("deleting rejected token", zap.String("connection", key.String()), errField(derr))
		}
		k.fail(key, "the provider rejected the refresh token; authorize again", now, true)
		return Token{}, ErrAuthorizationRequired, false
	}
	if err != nil {
		k.obs.Refreshed(key, trigger, "transient")
		k.log.Warn("refresh failed", zap.String("connection", key.String()), errField(err))
		tok, err := k.transient(key, tok, version, err)
		return tok, err, false
	}
	k.obs.Refreshed(key, trigger, "ok")
	next := FromOAuth2(ot, tok, k.now())
	v, err := k.store.Put(ctx, key.tokenPath(), next.record(), version)
	if errors.Is(err, kv.ErrConflict) {
		// Only a reconnect writes without the lease; its token wins.
		k.log.Warn("token changed during refresh; re-reading", zap.String("connection", key.String()))
		return Token{}, nil, true
	}
	if err != nil {
		// The provider has rotated the refresh token but we could not
		// keep it: serve the new access token from memory and say so.
		k.log.Error("storing refreshed token", zap.String("connection", key.String()), errField(err))
		k.remember(key, next, version)
		return next, nil, false
	}
	k.log.Info("token refreshed", zap.String("connection", key.String()),
		zap.Time("expiry", next.Expiry), zap.Bool("rotated", next.RefreshToken != tok.RefreshToken))
	k.remember(key, next, v)
	return next, nil, false
}

func (k *Keeper) wants(tok Token, now time.Time, p Policy, rejected string) bool {
	if rejected != "" {
		return tok.AccessToken == rejected
	}
	return tok.due(now, p.Margin) || !tok.Usable(now)
}

func (k *Keeper) cannotRefresh(key Key, tok Token, version int, now time.Time) (Token, error) {
	if tok.Usable(now) {
		k.remember(key, tok, version)
		return tok, nil
	}
	k.fail(key, "the access token expired and there is no usable refresh token; authorize again", now, false)
	return Token{}, ErrAuthorizationRequired
}

// transient serves the current token while it is still valid, or reports
// the connection unavailable.
func (k *Keeper) transient(key Key, tok Token, version int, cause error) (Token, error) {
	now := k.now()
	k.fail(key, "refresh failed temporarily; will retry", now, false)
	if tok.Usable(now) {
		k.remember(key, tok, version)
		return tok, nil
	}
	return Token{}, &UnavailableError{RetryAfter: 5 * time.Second, Err: cause}
}

func (k *Keeper) read(ctx context.Context, key Key) (Token, int, error) {
	e, err := k.store.Get(ctx, key.tokenPath())
	if errors.Is(err, kv.ErrNotFound) {
		k.cache.mu.Lock()
		ent := k.cache.entryLocked(key)
		ent.tok, ent.version, ent.missingAt = Token{}, 0, k.now()
		k.cache.mu.Unlock()
		return Token{}, 0, ErrAuthorizationRequired
	}
	if err != nil {
		return Token{}, 0, &UnavailableError{RetryAfter: 5 * time.Second, Err: fmt.Errorf("reading token: %w", err)}
	}
	tok, err := tokenFromRecord(e.Data)
	if err != nil {
		return Token{}, 0, &UnavailableError{RetryAfter: 30 * time.Second, Err: fmt.Errorf("connection %s: %w", key, err)}
	}
	return tok, e.Version, nil
}

func (k *Keeper) remember(key Key, tok Token, version int) {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	e := k.cache.entryLocked(key)
	e.tok, e.version, e.missingAt = tok, version, time.Time{}
}

func (k *Keeper) fail(key Key, msg string, now time.Time, gone bool) {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	e := k.cache.entryLocked(key)
	e.lastErr, e.lastErrAt = msg, now
	if gone {
		e.tok, e.version, e.missingAt = Token{}, 0, now
	}
}

// Save stores a token set obtained by authorizing (a code exchange) by the
// user connectedBy (empty if unknown), replacing whatever the connection
// held.
func (k *Keeper) Save(ctx context.Context, key Key, ot *oauth2.Token, connectedBy string) (Token, error) {
	if err := key.Validate(); err != nil {
		return Token{}, err
	}
	now := k.now()
	tok := FromOAuth2(ot, Token{}, now)
	tok.ConnectedAt, tok.ConnectedBy = now, connectedBy
	for range 5 {
		version := 0
		e, err := k.store.Get(ctx, key.tokenPath())
		switch {
		case err == nil, errors.Is(err, kv.ErrNotFound):
			version = e.Version
		default:
			return Token{}, fmt.Errorf("saving token: %w", err)
		}
		v, err := k.store.Put(ctx, key.tokenPath(), tok.record(), version)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return Token{}, fmt.Errorf("saving token: %w", err)
		}
		k.cache.mu.Lock()
		*k.cache.entryLocked(key) = entry{tok: tok, version: v}
		k.cache.mu.Unlock()
		return tok, nil
	}
	return Token{}, fmt.Errorf("saving token: %w", kv.ErrConflict)
}

// Status is what may be shown about a connection: never a secret.
type Status struct {
	// Connected is true when a token is stored.
	Connected bool
	// Expiry is the access token's expiry (zero if unknown).
	Expiry time.Time
	// Usable is true when the access token is valid now or can be
	// refreshed.
	Usable bool
	// ConnectedAt is when the connection was authorized, and by whom.
	ConnectedAt time.Time
	ConnectedBy string
	// LastError describes the last refresh failure in plain words.
	LastError   string
	LastErrorAt time.Time
}

// Status reads the connection's state from the store.
func (k *Keeper) Status(ctx context.Context, key Key) (Status, error) {
	var s Status
	if e, ok := k.cache.get(key); ok {
		s.LastError, s.LastErrorAt = e.lastErr, e.lastErrAt
	}
	e, err := k.store.Get(ctx, key.tokenPath())
	if errors.Is(err, kv.ErrNotFound) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading token: %w", err)
	}
	tok, err := tokenFromRecord(e.Data)
	if err != nil {
		return s, err
	}
	now := k.now()
	s.Connected, s.Expiry, s.ConnectedAt, s.ConnectedBy = true, tok.Expiry, tok.ConnectedAt, tok.ConnectedBy
	s.Usable = tok.Usable(now) || tok.Refreshable(now)
	return s, nil
}

// Stored reads the connection's token from the store, or returns
// ErrAuthorizationRequired if there is none.
func (k *Keeper) Stored(ctx context.Context, key Key) (Token, error) {
	tok, _, err := k.read(ctx, key)
	return tok, err
}

// Disconnect removes the connection: its record with every version in the
// store, and its cache entry.
func (k *Keeper) Disconnect(ctx context.Context, key Key) error {
	if err := k.store.Delete(ctx, key.tokenPath()); err != nil {
		return fmt.Errorf("deleting token: %w", err)
	}
	k.Forget(key)
	return nil
}

// Forget drops a connection from the cache.
func (k *Keeper) Forget(key Key) {
	k.cache.mu.Lock()
	delete(k.cache.entries, key)
	k.cache.mu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) {
	d += rand.N(d/2 + 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func errField(err error) zap.Field { return zap.String("error", err.Error()) }
