package tokens

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"golang.org/x/sync/singleflight"
)

// Cache is the in-memory state that outlives a configuration: each
// connection's token set and refresh bookkeeping, in-flight refreshes, token
// sets the store has not taken yet, and each connector's client state. Share
// one Cache between the Keepers of successive configurations that use the
// same store, so that a reload neither forgets a rotated token nor cancels a
// refresh.
//
// Reading a connection (every proxied request) takes no lock and stores
// nothing once the connection is marked used: the entries are in a hash
// table whose readers only load (see table), and each entry is an
// immutable packed value replaced whole (copy on write) by writers, who
// take mu. A read therefore shares no written cache line with other
// readers, however hot the connection.
type Cache struct {
	// mu serialises the writers of the table and guards connectors and
	// the pending writes' records; readers of the table never take it.
	mu   sync.RWMutex
	tab  atomic.Pointer[table]
	seed maphash.Seed
	n    atomic.Int64 // entries in tab
	// connectors is guarded by mu.
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
	// writeVia is the Keeper whose store the writers use: the latest
	// configuration's (Keeper.TakeOverWrites), as a reload may have
	// fixed what made the writes fail (credentials, addresses).
	writeVia atomic.Pointer[Keeper]
	stop     chan struct{}
	closing  sync.Once
}

// table is a chained hash table with lock-free readers: readers only load
// (a bucket, then each node's next). The writer, holding Cache.mu, never
// changes a published node but its next and its use mark: it links a new
// node in at a bucket's head, replaces a node by linking a copy in its
// place, unlinks one by pointing its predecessor past it (a reader standing
// on a node replaced or unlinked still finds its way on), and grows the
// table by building a new one of fresh nodes, so that a reader still
// walking the old table sees it as it was when it grew.
type table struct {
	buckets []atomic.Pointer[node]
	mask    uint64
}

// node is one connection: its key, its packed entry, and its use mark (a
// CLOCK bit), which a read sets only when it is clear, so that a connection
// in steady use costs no store; an eviction pass clears it.
type node struct {
	key  Key
	next atomic.Pointer[node]
	used atomic.Uint32
	hash uint32
	packed
}

// hash hashes the subject, and mixes in the connector (there are few).
func (c *Cache) hash(k Key) uint64 {
	h := maphash.String(c.seed, k.Subject)
	if k.Connector != "" {
		h ^= maphash.String(c.seed, k.Connector) * 0x9e3779b97f4a7c15
	}
	return h
}

// lookup returns key's node in the current table, or nil.
func (c *Cache) lookup(key Key) *node {
	t := c.tab.Load()
	h := c.hash(key)
	for n := t.buckets[h&t.mask].Load(); n != nil; n = n.next.Load() {
		if n.hash == uint32(h) && n.key == key {
			return n
		}
	}
	return nil
}

// findLocked returns key's node and the link that points to it (nil, and
// the bucket, when there is none). c.mu must be held.
func (c *Cache) findLocked(key Key) (*atomic.Pointer[node], *node) {
	t := c.tab.Load()
	h := c.hash(key)
	link := &t.buckets[h&t.mask]
	for n := link.Load(); n != nil; n = link.Load() {
		if n.hash == uint32(h) && n.key == key {
			return link, n
		}
		link = &n.next
	}
	return &t.buckets[h&t.mask], nil
}

// each calls f with every node until f returns false.
func (c *Cache) each(f func(*node) bool) {
	t := c.tab.Load()
	for i := range t.buckets {
		for n := t.buckets[i].Load(); n != nil; n = n.next.Load() {
			if !f(n) {
				return
			}
		}
	}
}

// copyNode returns a copy of n holding p, with n's use mark.
func copyNode(n *node, p packed) *node {
	m := &node{key: n.key, hash: n.hash, packed: p}
	m.used.Store(n.used.Load())
	return m
}

// growLocked doubles the table when it holds as many entries as buckets.
func (c *Cache) growLocked() {
	t := c.tab.Load()
	if c.n.Load() < int64(len(t.buckets)) {
		return
	}
	nt := newTable(2 * len(t.buckets))
	for i := range t.buckets {
		for n := t.buckets[i].Load(); n != nil; n = n.next.Load() {
			m := copyNode(n, n.packed)
			b := &nt.buckets[c.hash(n.key)&nt.mask]
			m.next.Store(b.Load())
			b.Store(m)
		}
	}
	c.tab.Store(nt)
}

func newTable(size int) *table {
	return &table{buckets: make([]atomic.Pointer[node], size), mask: uint64(size - 1)}
}

// entry is what the cache knows of one connection, as its users read and
// change it (the cache keeps it packed).
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

// packed is an entry as the cache holds it, never changed once published:
// a million connections must fit in a few hundred bytes each. The secrets,
// the generation and the authorizing user share one string allocation;
// times are Unix nanoseconds; the token type and scope, alike across a
// connector's connections, are interned; the refresh bookkeeping most
// connections never need is behind one pointer, nil while unused.
type packed struct {
	// strs is "Bearer ", the access token, the refresh token, the
	// generation and who connected, one after the other: the
	// Authorization header a request carries is a slice of it.
	strs                    string
	nAccess, nRefresh, nGen uint32
	meta                    unique.Handle[tokenMeta] // zero when both are empty
	expiry, refreshExpiry   int64
	obtainedAt, connected   int64
	missingAt, checkedAt    int64
	version                 int
	cold                    *coldEntry
	md                      Metadata // shared with the token set it came from
}

type tokenMeta struct{ tokenType, scope string }

// coldEntry is the part of an entry that only refreshes and failures use.
type coldEntry struct {
	refreshing bool
	failures   int
	forcedEnd  time.Time
	retryAt    time.Time
	pending    *pendingWrite
	lastErr    string
	lastErrAt  time.Time
}

// noTime stands for the zero time.Time; other times are clamped to the
// nanoseconds an int64 can count from 1970 (years 1678 to 2262).
const noTime = math.MinInt64

var (
	minNano = time.Unix(0, math.MinInt64+1)
	maxNano = time.Unix(0, math.MaxInt64)
)

func packTime(t time.Time) int64 {
	switch {
	case t.IsZero():
		return noTime
	case t.Before(minNano):
		return math.MinInt64 + 1
	case t.After(maxNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func unpackTime(n int64) time.Time {
	if n == noTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// pack returns e packed, sharing old's strings where they are unchanged.
func pack(e *entry, old *packed) packed {
	t := &e.tok
	p := packed{
		expiry: packTime(t.Expiry), refreshExpiry: packTime(t.RefreshExpiry),
		obtainedAt: packTime(t.ObtainedAt), connected: packTime(t.ConnectedAt),
		missingAt: packTime(e.missingAt), checkedAt: packTime(e.checkedAt),
		version: e.version, md: t.Metadata,
	}
	if old != nil && old.accessToken() == t.AccessToken && old.refreshToken() == t.RefreshToken &&
		old.generation() == t.Generation && old.connectedBy() == t.ConnectedBy {
		p.strs, p.nAccess, p.nRefresh, p.nGen = old.strs, old.nAccess, old.nRefresh, old.nGen
	} else {
		p.strs = bearerPrefix + t.AccessToken + t.RefreshToken + t.Generation + t.ConnectedBy
		p.nAccess, p.nRefresh, p.nGen = uint32(len(t.AccessToken)), uint32(len(t.RefreshToken)), uint32(len(t.Generation))
	}
	m := tokenMeta{t.TokenType, t.Scope}
	switch {
	case old != nil && old.tokenMeta() == m:
		p.meta = old.meta
	case m != tokenMeta{}:
		p.meta = unique.Make(m)
	}
	c := coldEntry{e.refreshing, e.failures, e.forcedEnd, e.retryAt, e.pending, e.lastErr, e.lastErrAt}
	switch {
	case c == coldEntry{}:
	case old != nil && old.cold != nil && *old.cold == c:
		p.cold = old.cold
	default:
		p.cold = &c
	}
	return p
}

// bearerPrefix starts every packed entry's strings.
const bearerPrefix = "Bearer "

const nb = uint32(len(bearerPrefix))

func (p *packed) authorization() string { return p.strs[:nb+p.nAccess] }
func (p *packed) accessToken() string   { return p.strs[nb : nb+p.nAccess] }
func (p *packed) refreshToken() string  { return p.strs[nb+p.nAccess : nb+p.nAccess+p.nRefresh] }
func (p *packed) generation() string {
	return p.strs[nb+p.nAccess+p.nRefresh : nb+p.nAccess+p.nRefresh+p.nGen]
}
func (p *packed) connectedBy() string { return p.strs[nb+p.nAccess+p.nRefresh+p.nGen:] }

func (p *packed) tokenMeta() tokenMeta {
	if p.meta == (unique.Handle[tokenMeta]{}) {
		return tokenMeta{}
	}
	return p.meta.Value()
}

// unpack returns p as an entry; its strings share p's memory. (Fields
// are set one by one in the result: building an entry and returning it
// would copy its 400 bytes once more on every read.)
func (p *packed) unpack() (e entry) {
	m := p.tokenMeta()
	e.tok.AccessToken, e.tok.RefreshToken = p.accessToken(), p.refreshToken()
	e.tok.TokenType, e.tok.Scope = m.tokenType, m.scope
	e.tok.Expiry, e.tok.RefreshExpiry = unpackTime(p.expiry), unpackTime(p.refreshExpiry)
	e.tok.ObtainedAt, e.tok.ConnectedAt = unpackTime(p.obtainedAt), unpackTime(p.connected)
	e.tok.ConnectedBy, e.tok.Generation = p.connectedBy(), p.generation()
	e.tok.Metadata = p.md
	e.version = p.version
	e.missingAt, e.checkedAt = unpackTime(p.missingAt), unpackTime(p.checkedAt)
	if c := p.cold; c != nil {
		e.refreshing, e.failures, e.forcedEnd, e.retryAt = c.refreshing, c.failures, c.forcedEnd, c.retryAt
		e.pending, e.lastErr, e.lastErrAt = c.pending, c.lastErr, c.lastErrAt
	}
	return e
}

func (p *packed) evictable() bool {
	return p.cold == nil || (p.cold.pending == nil && !p.cold.refreshing)
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
	c := &Cache{
		seed:       maphash.MakeSeed(),
		connectors: make(map[string]*connectorState),
		max:        max,
		holder:     newID(),
		stop:       make(chan struct{}),
	}
	c.tab.Store(newTable(64))
	return c
}

// insertLocked links a new node for key, holding p, making room for it
// first. c.mu must be held for writing, and key must not be in the table.
func (c *Cache) insertLocked(key Key, p packed) {
	if int(c.n.Load()) >= c.max {
		c.evictLocked()
	}
	c.growLocked()
	t := c.tab.Load()
	h := c.hash(key)
	n := &node{key: key, hash: uint32(h), packed: p}
	b := &t.buckets[h&t.mask]
	n.next.Store(b.Load())
	b.Store(n)
	c.n.Add(1)
}

// deleteLocked unlinks key's node from the current table unless keep
// returns true. c.mu must be held for writing.
func (c *Cache) deleteLocked(key Key, keep func(*node) bool) {
	if link, n := c.findLocked(key); n != nil && !keep(n) {
		link.Store(n.next.Load())
		c.n.Add(-1)
	}
}

// evictLocked drops the entries unused since the last pass, and then, if
// that freed too little, any entries, until a tenth of the room is free.
// It visits every entry: a pass costs time in proportion to the cache's
// size and frees at least a tenth of it, so each eviction costs a
// constant amortised time. Readers are not held up (they take no lock).
func (c *Cache) evictLocked() {
	target := int64(c.max - c.max/10)
	for pass := range 2 {
		t := c.tab.Load()
		for i := range t.buckets {
			link := &t.buckets[i]
			for n := link.Load(); n != nil; n = link.Load() {
				if pass == 1 && c.n.Load() <= target {
					return
				}
				// The first pass spares what was used since the
				// last; the second anything it may drop.
				if (pass == 1 || n.used.Swap(0) == 0) && n.evictable() {
					link.Store(n.next.Load())
					c.n.Add(-1)
					continue
				}
				link = &n.next
			}
		}
		if c.n.Load() <= target {
			return
		}
	}
}

// get returns a copy of the cached entry, if any. It takes no lock.
func (c *Cache) get(key Key) (entry, bool) {
	n := c.lookup(key)
	if n == nil {
		return entry{}, false
	}
	if n.used.Load() == 0 {
		n.used.Store(1)
	}
	return n.unpack(), true
}

// update runs f on key's entry (created if needed) under the lock.
func (c *Cache) update(key Key, f func(e *entry)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateLocked(key, f)
}

// updateCached runs f on key's entry under the lock if the cache holds
// one: background work on a connection the cache dropped meanwhile must not
// bring it back, which would evict others in its place.
func (c *Cache) updateCached(key Key, f func(e *entry)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, n := c.findLocked(key); n != nil {
		c.updateLocked(key, f)
	}
}

// updateIfSame runs f on key's entry, as update does, only while the
// cache's node for key is still seen (nil: still none). Every change to an
// entry publishes a new node, so a store read that began before a change
// here (a disconnect, a reconnect, a refresh's write) cannot undo it with
// what it read: its result is dropped, and the next read gets it right.
// It reports whether f ran.
func (c *Cache) updateIfSame(key Key, seen *node, f func(e *entry)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, n := c.findLocked(key); n != seen {
		return false
	}
	c.updateLocked(key, f)
	return true
}

// updateLocked runs f on a copy of key's entry (an empty one if there is
// none) and publishes the result. c.mu must be held for writing.
func (c *Cache) updateLocked(key Key, f func(e *entry)) {
	link, n := c.findLocked(key)
	if n == nil {
		// Readers see the new connection only once f has made it.
		var e entry
		f(&e)
		c.insertLocked(key, pack(&e, nil))
		return
	}
	e := n.unpack()
	f(&e)
	m := copyNode(n, pack(&e, &n.packed))
	m.next.Store(n.next.Load())
	link.Store(m)
}

// forget drops key's entry unless it must stay (a refresh in flight or a
// token set to write).
func (c *Cache) forget(key Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deleteLocked(key, func(n *node) bool { return !n.evictable() })
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
	c.each(func(n *node) bool {
		p := &n.packed
		f(ConnectionState{Key: n.key, Connected: p.missingAt == noTime && p.nAccess > 0,
			Expiry: unpackTime(p.expiry), Unsaved: p.cold != nil && p.cold.pending != nil})
		return true
	})
}

// Len returns the number of cached connections.
func (c *Cache) Len() int { return int(c.n.Load()) }

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
	left := 0
	c.each(func(n *node) bool {
		if p := &n.packed; p.cold != nil && p.cold.pending != nil {
			left++
		}
		return true
	})
	return left
}
