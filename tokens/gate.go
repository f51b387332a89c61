package tokens

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"
)

// Bounds of a connector's refresh work in one process, the defaults of
// Policy.MaxConcurrentRefreshes and Policy.MaxWaiting.
const (
	DefaultMaxConcurrentRefreshes = 16
	DefaultMaxWaiting             = 1000
)

// ErrOverloaded is wrapped by the UnavailableError answered at once, without
// waiting, when as many requests as the policy's MaxWaiting already wait
// for a token of the same connector in this process.
var ErrOverloaded = errors.New("too many requests are waiting for tokens of this connector")

// overloadRetry is the Retry-After of an overloaded answer: long enough
// for a wave's queue to move, short enough not to idle a client.
const overloadRetry = 2 * time.Second

func (p Policy) maxConcurrentRefreshes() int {
	if p.MaxConcurrentRefreshes <= 0 {
		return DefaultMaxConcurrentRefreshes
	}
	return p.MaxConcurrentRefreshes
}

func (p Policy) maxWaiting() int {
	if p.MaxWaiting <= 0 {
		return DefaultMaxWaiting
	}
	return p.MaxWaiting
}

// gate bounds one connector's refresh jobs in one process. A refresh job
// (the store reads and writes of a connection and its token request) runs
// only while it holds one of the gate's slots; jobs that find every slot
// taken queue, and the connection due soonest goes first, so that in a
// wave the tokens closest to expiry are refreshed before the others. It
// also counts the requests waiting for a token, which are bounded so that
// a wave the provider cannot keep up with is shed with 503s rather than
// piling up requests (and their memory) until they time out.
//
// Gates live as long as the Cache: they bound the process, whichever
// configuration's Keeper starts the job.
type gate struct {
	mu      sync.Mutex
	limit   int
	running int
	queue   tickets
	seq     uint64
	waiting int
	// revalidating counts the background re-reads of records running.
	revalidating int
	// expected is a running average of how long this process takes to
	// refresh a connection under the lease (token request and write):
	// how long to wait before looking at another replica's lease again.
	expected time.Duration
}

// gateKey names a gate: the process's Cache (by its lease holder name) and
// the connector.
type gateKey struct{ cache, connector string }

var gates sync.Map // gateKey → *gate

// gate returns the gate of key's connector, made on first use and dropped
// with the Cache.
func (k *Keeper) gate(connector string) *gate {
	gk := gateKey{k.cache.holder, connector}
	if g, ok := gates.Load(gk); ok {
		return g.(*gate)
	}
	g, loaded := gates.LoadOrStore(gk, &gate{})
	if !loaded {
		runtime.AddCleanup(k.cache, func(gk gateKey) { gates.Delete(gk) }, gk)
	}
	return g.(*gate)
}

// ticket is a job waiting for a slot.
type ticket struct {
	due   time.Time
	seq   uint64
	ready chan struct{}
}

// tickets is a heap of tickets: the earliest due first, then first come.
type tickets []*ticket

func (q tickets) Len() int { return len(q) }
func (q tickets) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}
func (q tickets) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *tickets) Push(x any)   { *q = append(*q, x.(*ticket)) }
func (q *tickets) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return t
}

// acquire waits for a slot, queued by due, with at most limit jobs running
// (the latest configuration's limit applies to everybody).
func (g *gate) acquire(due time.Time, limit int) {
	g.mu.Lock()
	g.limit = limit
	if g.running < g.limit && len(g.queue) == 0 {
		g.running++
		g.mu.Unlock()
		return
	}
	g.seq++
	t := &ticket{due: due, seq: g.seq, ready: make(chan struct{})}
	heap.Push(&g.queue, t)
	g.mu.Unlock()
	<-t.ready
}

// slot is a refresh job's hold on its connector's gate, taken for the
// job's connection falling due at due.
type slot struct {
	g     *gate
	due   time.Time
	limit int
	held  bool
}

// takeSlot waits for a slot of key's connector under p's bound.
func (k *Keeper) takeSlot(key Key, due time.Time, p Policy) *slot {
	s := &slot{g: k.gate(key.Connector), due: due, limit: p.maxConcurrentRefreshes()}
	s.g.acquire(due, s.limit)
	s.held = true
	return s
}

// pause gives the slot back for d (while the job waits for another
// replica's lease, others may refresh), then queues for it again.
func (s *slot) pause(d time.Duration) {
	s.free()
	time.Sleep(d)
	s.g.acquire(s.due, s.limit)
	s.held = true
}

// free gives the slot back, once.
func (s *slot) free() {
	if s.held {
		s.held = false
		s.g.release()
	}
}

// release gives a slot back and hands free slots to the jobs queued first.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	for g.running < g.limit && len(g.queue) > 0 {
		t := heap.Pop(&g.queue).(*ticket)
		g.running++
		close(t.ready)
	}
}

// enter counts a request that is about to wait for a token, or returns an
// overloaded UnavailableError when limit requests already wait.
func (g *gate) enter(limit int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting >= limit {
		return &UnavailableError{RetryAfter: overloadRetry, Err: ErrOverloaded}
	}
	g.waiting++
	return nil
}

// leave ends a wait counted by enter.
func (g *gate) leave() {
	g.mu.Lock()
	g.waiting--
	g.mu.Unlock()
}

// Default and bounds of the expected refresh time used before this process
// has refreshed anything, and to keep one slow refresh from making waits
// too long or short.
const (
	expectedRefreshDefault = 250 * time.Millisecond
	expectedRefreshMin     = 20 * time.Millisecond
	expectedRefreshMax     = 5 * time.Second
)

// took records that a refresh under the lease took d.
func (g *gate) took(d time.Duration) {
	d = min(max(d, expectedRefreshMin), expectedRefreshMax)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.expected == 0 {
		g.expected = d
		return
	}
	g.expected += (d - g.expected) / 4
}

// leaseWait is how long to wait before reading the record again after
// finding, for the n-th time in a row (n ≥ 1), another replica's live lease
// l on it: about as long as a refresh takes here at first, then doubling,
// up to five seconds (a waiting request must not overstay max_wait), with
// jitter so that replicas waiting on the same lease do not read together,
// and never past the moment the lease is over (when this process may take
// it). A replica thus reads a record a few times per lease, however
// many of its requests wait for it.
func (g *gate) leaseWait(n int, l lease, now time.Time, skew time.Duration) time.Duration {
	g.mu.Lock()
	d := g.expected
	g.mu.Unlock()
	if d == 0 {
		d = expectedRefreshDefault
	}
	for i := 1; i < n && d < expectedRefreshMax; i++ {
		d *= 2
	}
	d = min(d, expectedRefreshMax)
	d += rand.N(d/2 + 1)
	if end := l.until.Add(skew).Sub(now); d > end {
		d = max(end, expectedRefreshMin)
	}
	return d
}

// tryRevalidate takes one of limit places for a background re-read of a
// record, or reports that none is free.
func (g *gate) tryRevalidate(limit int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.revalidating >= limit {
		return false
	}
	g.revalidating++
	return true
}

// revalidated gives back a place taken by tryRevalidate.
func (g *gate) revalidated() {
	g.mu.Lock()
	g.revalidating--
	g.mu.Unlock()
}
