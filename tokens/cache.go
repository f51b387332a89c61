package tokens

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Cache is the in-memory state that outlives a configuration: each
// connection's token set and refresh bookkeeping, in-flight refreshes, token
// sets the store has not taken yet, and each connector's client state. Share
// one Cache between the Keepers of successive configurations that use the
// same store, so that a reload neither forgets a rotated token nor cancels a
// refresh.
type Cache struct {
	mu         sync.RWMutex
	entries    map[Key]*slot
	connectors map[string]*connectorState
	flight     singleflight.Group
	max        int
	// holder names this process in refresh leases.
	holder string
	// scoped holds the connections' per-resource access tokens
	// (scoped.go).
	scoped scopedTokens

	// writers are the goroutines writing unsaved token sets; stop ends
	// them (Close).
	writers sync.WaitGroup
	stop    chan struct{}
	closing sync.Once
}

// slot holds a connection's entry and its use mark, which readers set
// concurrently (atomically) while they copy the entry under the read lock.
type slot struct {
	used atomic.Uint32 // set on every hit, cleared by eviction passes
	e    entry
}

// entry is what the cache knows of one connection.
type entry struct {
	tok     Token
	version int // the store version tok was read at or written as
	// missingAt is set when the store holds no usable token set (no
	// record, a tombstone, or a grant the provider refused): a negative
	// entry, read again after the Keeper's missing TTL.
	missingAt time.Time
	// checkedAt is when the store's version was last compared with ours.
	checkedAt time.Time

	// refreshing is set while a refresh job runs for the connection, so
	// that concurrent 401s join it instead of passing through.
	refreshing bool
	// forcedEnd is when the last refresh triggered by a 401 ended; the
	// cooldown counts from there.
	forcedEnd time.Time
	// failures counts consecutive transient failures; no token request is
	// made before retryAt.
	failures int
	retryAt  time.Time

	// pending is a token set the provider issued that the store has not
	// taken yet: while set, it is the connection's authoritative state.
	pending *pendingWrite

	lastErr   string // last failure, in plain words safe to show
	lastErrAt time.Time
}

// connectorState is a connector whose client the provider refuses
// (invalid_client and kin): a configuration problem, not a connection's.
type connectorState struct {
	// refresher is the configuration's connector that was refused; a
	// reload brings another, which starts afresh.
	refresher Refresher
	code      string
	since     time.Time
	failures  int
	retryAt   time.Time
}

// DefaultMaxConnections bounds a Cache made by NewCache.
const DefaultMaxConnections = 100_000

// NewCache makes an empty Cache of at most DefaultMaxConnections.
func NewCache() *Cache { return NewBoundedCache(DefaultMaxConnections) }

// NewBoundedCache makes an empty Cache that holds at most max connections:
// beyond that, the connections not used since the previous eviction pass
// are dropped first (they are read again from the store when next used).
// Connections with a refresh in flight or a token set still to be written
// are never dropped.
func NewBoundedCache(max int) *Cache {
	return &Cache{
		entries:    make(map[Key]*slot),
		connectors: make(map[string]*connectorState),
		max:        max,
		holder:     newID(),
		stop:       make(chan struct{}),
	}
}

// entryLocked returns the entry of key, creating it (and making room for
// it) if needed. c.mu must be held for writing.
func (c *Cache) entryLocked(key Key) *entry {
	s := c.entries[key]
	if s == nil {
		if len(c.entries) >= c.max {
			c.evictLocked()
		}
		s = &slot{}
		c.entries[key] = s
	}
	return &s.e
}

// evictLocked drops the entries unused since the last pass, and then, if
// that freed too little, any entries, until a tenth of the room is free.
func (c *Cache) evictLocked() {
	for k, s := range c.entries {
		if s.used.Swap(0) == 0 && s.e.evictable() {
			delete(c.entries, k)
		}
	}
	target := c.max - c.max/10
	for k, s := range c.entries {
		if len(c.entries) <= target {
			break
		}
		if s.e.evictable() {
			delete(c.entries, k)
		}
	}
}

func (e *entry) evictable() bool { return e.pending == nil && !e.refreshing }

// get returns a copy of the cached entry, if any.
func (c *Cache) get(key Key) (entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.entries[key]
	if s == nil {
		return entry{}, false
	}
	if s.used.Load() == 0 {
		s.used.Store(1)
	}
	return s.e, true
}

// update runs f on key's entry (created if needed) under the lock.
func (c *Cache) update(key Key, f func(e *entry)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c.entryLocked(key))
}

// ConnectionState is what the cache knows of one connection, for metrics.
type ConnectionState struct {
	Key Key
	// Connected is false for a connection known to have no token.
	Connected bool
	// Expiry is the cached access token's expiry (zero if unknown).
	Expiry time.Time
	// Unsaved is true while the store has not taken the connection's
	// latest token set.
	Unsaved bool
}

// Each calls f with the state of every cached connection.
func (c *Cache) Each(f func(ConnectionState)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k, s := range c.entries {
		e := &s.e
		f(ConnectionState{Key: k, Connected: e.missingAt.IsZero() && e.tok.AccessToken != "", Expiry: e.tok.Expiry, Unsaved: e.pending != nil})
	}
}

// Len returns the number of cached connections.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Misconfigured returns the RFC 6749 error code with which the provider
// refuses connector's client, and since when; ok is false when it does not.
func (c *Cache) Misconfigured(connector string) (code string, since time.Time, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s := c.connectors[connector]; s != nil {
		return s.code, s.since, true
	}
	return "", time.Time{}, false
}

// Close waits up to timeout for the token sets still to be written to
// reach the store, then stops trying. It returns how many were left
// unwritten.
func (c *Cache) Close(timeout time.Duration) int {
	done := make(chan struct{})
	go func() { c.writers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	c.closing.Do(func() { close(c.stop) })
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, s := range c.entries {
		if s.e.pending != nil {
			n++
		}
	}
	return n
}
