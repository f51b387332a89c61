// Package ratelimit limits how often each client (by IP address, IPv6 by
// network; see ClientKey) may call an endpoint, with a token bucket per
// client from golang.org/x/time/rate. The number of clients it remembers is
// bounded: the least recently seen is forgotten first, so a flood of
// addresses cannot grow memory.
package ratelimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter allows each key Requests per Window, in bursts of up to Requests.
type Limiter struct {
	limit      rate.Limit
	burst      int
	maxClients int

	mu      sync.Mutex
	clients map[string]*list.Element
	lru     *list.List // front: most recently seen
}

type client struct {
	key string
	lim *rate.Limiter
}

// New makes a Limiter. maxClients bounds the clients remembered.
func New(requests int, window time.Duration, maxClients int) *Limiter {
	return &Limiter{
		limit:      rate.Limit(float64(requests) / window.Seconds()),
		burst:      requests,
		maxClients: maxClients,
		clients:    make(map[string]*list.Element),
		lru:        list.New(),
	}
}

// Allow reports whether key may make a request now; if not, it says how long
// until it may.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var c *client
	if el, ok := l.clients[key]; ok {
		l.lru.MoveToFront(el)
		c = el.Value.(*client)
	} else {
		if l.lru.Len() >= l.maxClients {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.clients, oldest.Value.(*client).key)
		}
		c = &client{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = l.lru.PushFront(c)
	}
	r := c.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Len returns the number of clients remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
