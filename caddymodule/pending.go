package caddymodule

import (
	"sync"
	"time"
)

// pendingFlows caps the authorizations a connector may have in flight on
// this instance, so that a client cycling through addresses cannot fill the
// store with states. Each flow counts until it finishes here or expires.
type pendingFlows struct {
	max int

	mu    sync.Mutex
	flows map[string][]time.Time // connector → expiry of each pending flow
}

func newPendingFlows(max int) *pendingFlows {
	return &pendingFlows{max: max, flows: map[string][]time.Time{}}
}

// add counts a new flow for connector until expiry, or reports that the
// connector is at its cap and when the next slot frees.
func (p *pendingFlows) add(connector string, now, expiry time.Time) (bool, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	live := p.flows[connector][:0]
	for _, e := range p.flows[connector] {
		if now.Before(e) {
			live = append(live, e)
		}
	}
	if len(live) >= p.max {
		p.flows[connector] = live
		return false, live[0].Sub(now)
	}
	p.flows[connector] = append(live, expiry)
	return true, 0
}

// done stops counting one flow of connector (the oldest: which one does not
// matter for the count).
func (p *pendingFlows) done(connector string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.flows[connector]; len(f) > 0 {
		p.flows[connector] = f[1:]
	}
}
