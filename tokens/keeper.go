package tokens

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Store is what the Keeper needs of a kv.Store.
type Store interface {
	Get(ctx context.Context, path string) (kv.Entry, error)
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
	Delete(ctx context.Context, path string) error
	List(ctx context.Context, dir string) ([]string, error)
}

// Refresher redeems a refresh token; *connector.Connector is one. Its
// errors are classified with connector.ClassOf.
type Refresher interface {
	Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error)
}

// Policy is a connection's refresh policy.
type Policy struct {
	// Margin is how long before expiry a token is refreshed.
	Margin time.Duration
	// Cooldown is the least time between the end of a refresh triggered
	// by an upstream 401 and the start of the next one.
	Cooldown time.Duration
	// MaxWait is the longest a request waits for a store read or a
	// refresh before it is answered with an UnavailableError while the
	// work goes on (default 10s).
	MaxWait time.Duration
	// Revalidate is how often a cached connection's record is read again,
	// off the request path, to learn of a disconnect, reconnect or import
	// made elsewhere (default 60s; negative: never).
	Revalidate time.Duration
	// MaxConcurrentRefreshes bounds the refresh jobs (store work and
	// token request) of the connector that run at once in this process;
	// the others queue, the connection due soonest first (default 16).
	MaxConcurrentRefreshes int
	// MaxWaiting bounds the requests of the connector waiting for a
	// token in this process; beyond it a request is answered at once
	// with an UnavailableError wrapping ErrOverloaded (default 1000).
	MaxWaiting int
}

// Defaults of Policy.
const (
	DefaultMaxWait    = 10 * time.Second
	DefaultRevalidate = time.Minute
)

func (p Policy) maxWait() time.Duration {
	if p.MaxWait <= 0 {
		return DefaultMaxWait
	}
	return p.MaxWait
}

func (p Policy) revalidate() time.Duration {
	if p.Revalidate == 0 {
		return DefaultRevalidate
	}
	return p.Revalidate
}

// ErrAuthorizationRequired means the connection has no usable token and none
// can be obtained without a user authorizing again.
var ErrAuthorizationRequired = errors.New("authorization required")

// ErrNoRetry is returned by Rejected when a 401 should be passed through
// rather than retried.
var ErrNoRetry = errors.New("no fresher token to retry with")

// ErrMisconfigured is wrapped by the UnavailableError of a connector whose
// client the provider refuses (invalid_client, unauthorized_client,
// unsupported_grant_type): its connections are kept, and the token endpoint
// is tried again at the backoff cadence.
var ErrMisconfigured = errors.New("the provider refuses the connector's client; its configuration needs fixing")

var (
	errBackingOff = errors.New("the token endpoint failed recently; waiting before trying again")
	errWaited     = errors.New("the token is still being fetched")
)

// UnavailableError means no usable token is at hand for now, for a reason
// that may pass (the token endpoint or the store failing, or the client
// refused until its configuration is fixed: errors.Is ErrMisconfigured).
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
	// Refreshed reports a refresh attempt once its outcome is final:
	// trigger is "proactive" (due or expired), "401", "admin",
	// "keepalive" or "scoped" (a token for other scopes, TokenFor); outcome is "ok" (the new token set is in the store),
	// "invalid_grant" (the connection now needs authorization),
	// "misconfigured" (the provider refuses the connector's client) or
	// "transient".
	Refreshed(key Key, trigger, outcome string)
}

type noObserver struct{}

func (noObserver) Refreshed(Key, string, string) {}

// Keeper keeps tokens for one configuration, in a Cache it may share with
// the configurations before and after it.
type Keeper struct {
	bgWork sync.WaitGroup // background jobs started by this Keeper

	cache *Cache
	store Store
	obs   Observer
	log   *zap.Logger
	now   func() time.Time

	budget     budget
	missingTTL time.Duration

	// tookOverFrom is the Keeper that wrote the cache's unsaved token
	// sets before this one took over (TakeOverWrites), until this
	// Keeper's configuration stops; guarded by the cache's lock.
	tookOverFrom *Keeper
}

// Options configure a Keeper. Only Store is required.
type Options struct {
	Cache *Cache
	Store Store
	// Logger receives operational logs; never a secret.
	Logger *zap.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Observer hears about refreshes (default: nobody).
	Observer Observer
	// StoreTimeout bounds each store request (default 5s).
	StoreTimeout time.Duration
	// TokenTimeout bounds each token request (default 30s).
	TokenTimeout time.Duration
	// Skew is how far replicas' clocks may disagree (default 5s).
	Skew time.Duration
}

// NewKeeper makes a Keeper.
func NewKeeper(o Options) *Keeper {
	k := &Keeper{
		cache: o.Cache, store: o.Store, obs: o.Observer, log: o.Logger, now: o.Now,
		budget:     newBudget(o.StoreTimeout, o.TokenTimeout, o.Skew),
		missingTTL: 2 * time.Second,
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
	k.cache.writeVia.CompareAndSwap(nil, k)
	return k
}

// TakeOverWrites makes k the Keeper through which the cache's unsaved
// token sets reach the store from now on, including those an earlier
// configuration sharing the cache left pending: call it when k's
// configuration starts. A reload that fixes the store's credentials or
// addresses then lets them land, rather than leaving them to the stopped
// configuration's store client.
func (k *Keeper) TakeOverWrites() {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	if prev := k.cache.writeVia.Swap(k); prev != k {
		k.tookOverFrom = prev
	}
}

// ReleaseWrites undoes TakeOverWrites when k's configuration stops. Caddy
// stops a configuration that started while another app's start failed,
// and the previous one goes on: the writes go back to it. After a
// reload that took, the next configuration writes already, and nothing
// goes back to k.
func (k *Keeper) ReleaseWrites() {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	switch cur := k.cache.writeVia.Load(); {
	case cur == k && k.tookOverFrom != nil:
		k.cache.writeVia.Store(k.tookOverFrom)
	case cur != nil && cur.tookOverFrom == k:
		cur.tookOverFrom = nil
	}
	k.tookOverFrom = nil
}

// Cache returns the Keeper's cache.
func (k *Keeper) Cache() *Cache { return k.cache }

// Token returns a usable access token for the connection. While the cached
// token is fresh this touches neither the store nor the network. A token
// that is due for refresh but still valid is returned at once while a
// refresh runs in the background; an expired one waits for the refresh, at
// most the policy's MaxWait.
func (k *Keeper) Token(ctx context.Context, key Key, r Refresher, p Policy) (Token, error) {
	now := k.now()
	if e, ok := k.cache.get(key); ok {
		switch {
		case !e.missingAt.IsZero():
			if now.Sub(e.missingAt) < k.missingTTL {
				return Token{}, ErrAuthorizationRequired
			}
		case e.tok.AccessToken != "" && !e.tok.due(now, p.Margin):
			k.maybeRevalidate(key, e, p, now)
			return e.tok, nil
		case e.tok.Usable(now):
			if !e.refreshing && k.blocked(key, e, r, now, false, false) == nil {
				k.background(job{key: key, r: r, p: p, trigger: "proactive", want: proactive(p)})
			}
			return e.tok, nil
		default:
			if err := k.blocked(key, e, r, now, false, false); err != nil {
				return Token{}, err
			}
		}
	}
	return k.do(ctx, job{key: key, r: r, p: p, trigger: "proactive", want: proactive(p)})
}

// Rejected is called when the upstream answered 401 to a request sent with
// the access token rejected. It returns the token to retry with, or
// ErrNoRetry when the 401 should be passed through. A fresher token already
// cached is returned at once; a refresh in flight is joined; otherwise a
// refresh is made unless one triggered by a 401 ended less than the
// cooldown ago.
func (k *Keeper) Rejected(ctx context.Context, key Key, r Refresher, p Policy, rejected string) (Token, error) {
	now := k.now()
	e, _ := k.cache.get(key)
	switch {
	case e.missingAt.IsZero() && e.tok.AccessToken != rejected && e.tok.Usable(now):
		return e.tok, nil
	case !e.refreshing && !e.forcedEnd.IsZero() && now.Sub(e.forcedEnd) < p.Cooldown:
		return Token{}, ErrNoRetry
	}
	tok, err := k.do(ctx, job{key: key, r: r, p: p, trigger: "401", want: func(t Token, _ time.Time) bool {
		return t.AccessToken == rejected
	}})
	if err != nil {
		return Token{}, err
	}
	if tok.AccessToken == rejected {
		return Token{}, ErrNoRetry
	}
	return tok, nil
}

// ForceRefresh refreshes the connection now, whatever its expiry and any
// backoff (for operators: the admin API). refreshed is false when no new
// token was obtained (another replica's refresh was used, or the token set
// had no refresh token).
func (k *Keeper) ForceRefresh(ctx context.Context, key Key, r Refresher) (tok Token, refreshed bool, err error) {
	cur, _, err := k.read(key)
	if err != nil {
		return Token{}, false, err
	}
	// Refreshed unless another replica rotated it meanwhile.
	tok, err = k.do(ctx, job{key: key, r: r, trigger: "admin", force: true, want: func(t Token, _ time.Time) bool {
		return t.AccessToken == cur.tok.AccessToken
	}})
	if err != nil {
		return Token{}, false, err
	}
	return tok, tok.AccessToken != cur.tok.AccessToken, nil
}

// Import redeems a refresh token obtained elsewhere (migrating from another
// system) and, only if the provider accepts it, makes the result the
// connection's, replacing what it held as a new grant. A refused import
// leaves the connection as it was.
func (k *Keeper) Import(ctx context.Context, key Key, refreshToken, connectedBy string, r Refresher) (Token, error) {
	if refreshToken == "" {
		return Token{}, errors.New("no refresh token to import")
	}
	if err := key.Validate(); err != nil {
		return Token{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, k.budget.token)
	defer cancel()
	ot, err := r.Refresh(ctx, refreshToken)
	if err != nil {
		return Token{}, fmt.Errorf("redeeming the imported refresh token: %w", err)
	}
	return k.replace(key, fromResponse(r, ot, Token{RefreshToken: refreshToken}, k.now()), connectedBy)
}

// Save stores a token set obtained by authorizing (a code exchange) by the
// user connectedBy (empty if unknown), replacing whatever the connection
// held: it is a new grant, with a new generation. The write is not
// cancelled with ctx: a person's consent is not thrown away half way.
func (k *Keeper) Save(ctx context.Context, key Key, ot *oauth2.Token, connectedBy string) (Token, error) {
	return k.SaveWithMetadata(ctx, key, ot, connectedBy, nil)
}

// SaveWithMetadata is Save for a connection whose metadata (from the token
// response, the authorization response and discovery) is already picked.
func (k *Keeper) SaveWithMetadata(ctx context.Context, key Key, ot *oauth2.Token, connectedBy string, metadata map[string]string) (Token, error) {
	if err := key.Validate(); err != nil {
		return Token{}, err
	}
	tok := FromOAuth2(ot, Token{}, k.now())
	tok.Metadata = NewMetadata(metadata)
	return k.replace(key, tok, connectedBy)
}

// Renew keeps a token set the provider issued anew for a connection's
// person without a flow of the proxy's own (an on-behalf-of exchange of
// the app's new user token, say). An active connection that connectedBy
// made keeps its generation, connection time and metadata, so that what
// hangs off it (per-resource tokens, a refresh in flight elsewhere) is not
// taken for a reconnect; anything else becomes a new connection, as Save
// makes. The record is written with check-and-set over the one read.
func (k *Keeper) Renew(ctx context.Context, key Key, ot *oauth2.Token, connectedBy string) (Token, error) {
	if err := key.Validate(); err != nil {
		return Token{}, err
	}
	for range 5 {
		cur, v, err := k.peek(key)
		if err != nil {
			return Token{}, fmt.Errorf("saving token: %w", err)
		}
		if cur.state != Active || cur.tok.Generation == "" || cur.tok.ConnectedBy != connectedBy {
			return k.replace(key, FromOAuth2(ot, Token{}, k.now()), connectedBy)
		}
		now := k.now()
		tok := FromOAuth2(ot, cur.tok, now)
		sctx, cancel := k.budget.storeCtx()
		nv, err := k.store.Put(sctx, key.tokenPath(), record{tok: tok}.fields(), v)
		cancel()
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return Token{}, fmt.Errorf("saving token: %w", err)
		}
		k.cache.update(key, func(e *entry) {
			*e = entry{tok: tok, version: nv, checkedAt: now}
		})
		return tok, nil
	}
	return Token{}, fmt.Errorf("saving token: %w", kv.ErrConflict)
}

// replace writes tok as the connection's new grant.
func (k *Keeper) replace(key Key, tok Token, connectedBy string) (Token, error) {
	now := k.now()
	tok.ConnectedAt, tok.ConnectedBy, tok.Generation = now, connectedBy, newID()
	v, err := k.overwrite(key, record{tok: tok})
	if err != nil {
		return Token{}, fmt.Errorf("saving token: %w", err)
	}
	k.cache.update(key, func(e *entry) {
		*e = entry{tok: tok, version: v, checkedAt: now}
	})
	return tok, nil
}

// overwrite writes rec over whatever the connection's record holds, with
// check-and-set at the version just read (so a concurrent writer's record
// is read again, not blindly replaced), on a context of its own.
func (k *Keeper) overwrite(key Key, rec record) (int, error) {
	return k.overwriteIf(key, rec, nil)
}

// overwriteIf is overwrite if may, given the generation the store's
// record holds ("" for none), allows it (nil: always), and ErrReplaced if
// it does not. The generation is read from the record's fields as they
// are, so that a record this build cannot parse (damaged, or of a newer
// schema) still names its grant.
func (k *Keeper) overwriteIf(key Key, rec record, may func(generation string) bool) (int, error) {
	for range 5 {
		ctx, cancel := k.budget.storeCtx()
		e, err := k.store.Get(ctx, key.tokenPath())
		cancel()
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return 0, err
		}
		if may != nil && !may(e.Data["generation"]) {
			return 0, ErrReplaced
		}
		ctx, cancel = k.budget.storeCtx()
		v, err := k.store.Put(ctx, key.tokenPath(), rec.fields(), e.Version)
		cancel()
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		return v, err
	}
	return 0, kv.ErrConflict
}

// Status is what may be shown about a connection: never a secret.
type Status struct {
	// Connected is true when a token set is stored.
	Connected bool
	// Expiry is the access token's expiry (zero if unknown).
	Expiry time.Time
	// Usable is true when the access token is valid now or can be
	// refreshed.
	Usable bool
	// ConnectedAt is when the connection was authorized, and by whom.
	ConnectedAt time.Time
	ConnectedBy string
	// State is why a stored connection holds no token set (the provider
	// refused its grant: NeedsAuthorization; Disconnected), with why in
	// plain words and since when.
	State  State
	Reason string
	Since  time.Time
	// Unsaved is true while this instance holds a newer token set than
	// the store, still being written.
	Unsaved bool
	// Misconfigured is the error code with which the provider refuses the
	// connector's client, if it does.
	Misconfigured string
	// LastError describes the last refresh failure in plain words.
	LastError   string
	LastErrorAt time.Time
	// Metadata are the connection's metadata (never secrets).
	Metadata Metadata
}

// Status reads the connection's state from the store.
func (k *Keeper) Status(ctx context.Context, key Key) (Status, error) {
	var s Status
	e, cached := k.cache.get(key)
	if cached {
		s.LastError, s.LastErrorAt = e.lastErr, e.lastErrAt
	}
	s.Misconfigured, _, _ = k.cache.Misconfigured(key.Connector)
	now := k.now()
	if cached && e.pending != nil {
		k.cache.mu.RLock()
		rec := e.pending.rec
		k.cache.mu.RUnlock()
		t := rec.tok
		s.Unsaved, s.ConnectedAt, s.ConnectedBy = true, t.ConnectedAt, t.ConnectedBy
		if rec.state != Active {
			s.State, s.Reason, s.Since = rec.state, rec.reason, rec.since
			return s, nil
		}
		s.Connected, s.Expiry, s.Metadata = true, t.Expiry, t.Metadata
		s.Usable = t.Usable(now) || t.Refreshable(now)
		return s, nil
	}
	ctx, cancel := k.budget.storeCtxFrom(ctx)
	defer cancel()
	se, err := k.store.Get(ctx, key.tokenPath())
	if errors.Is(err, kv.ErrNotFound) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading token: %w", err)
	}
	rec, err := parseRecord(se.Data)
	if err != nil {
		return s, err
	}
	t := rec.tok
	s.ConnectedAt, s.ConnectedBy = t.ConnectedAt, t.ConnectedBy
	if rec.state != Active {
		s.State, s.Reason, s.Since = rec.state, rec.reason, rec.since
		return s, nil
	}
	s.Connected, s.Expiry, s.Metadata = true, t.Expiry, t.Metadata
	s.Usable = t.Usable(now) || t.Refreshable(now)
	return s, nil
}

// Stored reads the connection's token set from the store, or returns
// ErrAuthorizationRequired if it holds none.
func (k *Keeper) Stored(ctx context.Context, key Key) (Token, error) {
	if e, ok := k.cache.get(key); ok && e.pending != nil {
		return e.pending.rec.tok, nil
	}
	rec, _, err := k.read(key)
	return rec.tok, err
}

// Disconnect ends the connection: its record becomes a tombstone (no
// secret, a higher version, no generation), so that no refresh begun for it
// can write it back, and any replica revalidating it learns that it is gone.
// The record of the lease that releases before schema 3 kept is removed too.
func (k *Keeper) Disconnect(ctx context.Context, key Key) error {
	return k.disconnect(key, nil)
}

// ErrReplaced is DisconnectGrant's answer when the connection holds
// another grant than the one to end (the person connected again
// meanwhile): nothing was changed.
var ErrReplaced = errors.New("the connection was authorized again meanwhile")

// DisconnectGrant is Disconnect for the grant of generation only (the one
// whose tokens the caller read, and revoked): a newer grant, made while
// the revocation was under way, stays, and the answer is ErrReplaced.
func (k *Keeper) DisconnectGrant(ctx context.Context, key Key, generation string) error {
	return k.disconnect(key, func(stored string) bool { return stored == "" || stored == generation })
}

// disconnect tombstones the connection's record if ends, given the
// generation the store's record holds ("" for none), says so (nil:
// whatever it holds).
func (k *Keeper) disconnect(key Key, ends func(generation string) bool) error {
	now := k.now()
	v, err := k.overwriteIf(key, record{state: Disconnected, reason: "disconnected", since: now}, ends)
	if errors.Is(err, ErrReplaced) {
		k.Forget(key) // the cache may hold the revoked grant: read the new one
		return err
	}
	if err != nil {
		return fmt.Errorf("disconnecting: %w", err)
	}
	sctx, cancel := k.budget.storeCtx()
	defer cancel()
	if err := k.store.Delete(sctx, key.legacyLeasePath()); err != nil {
		k.log.Debug("removing a legacy lease record", zap.String("connection", key.String()), errField(err))
	}
	k.cache.update(key, func(e *entry) {
		*e = entry{version: v, missingAt: now, checkedAt: now}
	})
	return nil
}

// Forget drops a connection from the cache, unless a token set of it is
// still to be written.
func (k *Keeper) Forget(key Key) {
	k.cache.forget(key)
}

// Wait waits for the background jobs (refreshes, revalidations) this Keeper
// started.
func (k *Keeper) Wait() { k.bgWork.Wait() }

// Subjects lists the subjects of connector's per-user connections in the
// store (tombstones and marked records included).
func (k *Keeper) Subjects(ctx context.Context, connector string) ([]string, error) {
	ctx, cancel := k.budget.storeCtxFrom(ctx)
	defer cancel()
	names, err := k.store.List(ctx, "tokens/"+connector)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if s, err := url.PathUnescape(n); err == nil && !strings.Contains(n, "/") {
			out = append(out, s)
		}
	}
	return out, nil
}

func errField(err error) zap.Field { return zap.String("error", err.Error()) }
