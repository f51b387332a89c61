package caddymodule

import (
	"container/list"
	"sync"
	"time"
)

// pendingFlows bounds the authorizations in flight on this instance, so
// that nobody can fill the store with states, and so that no one can lock
// anyone else out either. A connector holds at most max flows and a client
// (a user, or an address) at most perClient flows of it; a new flow beyond
// either bound displaces the oldest flow concerned instead of being
// refused: abandoned flows cannot keep a slot that someone connecting
// needs, and a client flooding the route mostly displaces its own flows. A
// flow counts until it finishes, is refused or fails at the callback,
// expires or is displaced.
type pendingFlows struct {
	max, perClient int

	mu    sync.Mutex
	flows map[string]*list.List // connector → its pending flows, oldest first
	byID  map[string]*list.Element
}

// pendingFlow is one counted flow.
type pendingFlow struct {
	id, connector, client string
	expiry                time.Time
}

func newPendingFlows(max, perClient int) *pendingFlows {
	return &pendingFlows{max: max, perClient: perClient, flows: map[string]*list.List{}, byID: map[string]*list.Element{}}
}

// add counts flow id of connector, started by client, until expiry. It
// returns the IDs of the flows it displaced, whose records the caller
// deletes. Expired flows are forgotten without being returned: the sweeper
// deletes their records.
func (p *pendingFlows) add(connector, client, id string, now, expiry time.Time) (displaced []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.flows[connector]
	if l == nil {
		l = list.New()
		p.flows[connector] = l
	}
	mine := 0
	for el := l.Front(); el != nil; {
		next := el.Next()
		f := el.Value.(*pendingFlow)
		if !now.Before(f.expiry) {
			p.remove(el)
		} else if f.client == client {
			mine++
		}
		el = next
	}
	// The client's own oldest go first, then the connector's oldest.
	for el := l.Front(); el != nil && mine >= p.perClient; {
		next := el.Next()
		if f := el.Value.(*pendingFlow); f.client == client {
			displaced = append(displaced, f.id)
			p.remove(el)
			mine--
		}
		el = next
	}
	for l.Len() >= p.max {
		displaced = append(displaced, l.Front().Value.(*pendingFlow).id)
		p.remove(l.Front())
	}
	p.byID[id] = l.PushBack(&pendingFlow{id: id, connector: connector, client: client, expiry: expiry})
	return displaced
}

// done stops counting flow id, if this instance counts it (a flow started
// on another replica is not).
func (p *pendingFlows) done(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el := p.byID[id]; el != nil {
		p.remove(el)
	}
}

// remove forgets a counted flow. The caller holds p.mu.
func (p *pendingFlows) remove(el *list.Element) {
	f := el.Value.(*pendingFlow)
	p.flows[f.connector].Remove(el)
	delete(p.byID, f.id)
}

// count returns how many flows of connector are counted (for tests).
func (p *pendingFlows) count(connector string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.flows[connector]; l != nil {
		return l.Len()
	}
	return 0
}
