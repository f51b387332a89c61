// Package faultproxy puts faults between a program under test and a real
// server it depends on (Vault, an OAuth 2.0 token endpoint), so that
// end-to-end tests can break the network or the server's answers while the
// test runs and then heal them again.
//
// TCP is a byte-level relay for faults below HTTP: connections refused,
// black-holed or slowed down. HTTP is a reverse proxy for faults in the
// answers: error statuses (optionally for matching requests only), RFC 6749
// error responses, requests held or delayed. Both are safe for concurrent
// use, change behaviour atomically on Set calls from the test goroutine, and
// stop when the test ends.
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is what a TCP proxy does with connections.
type Mode int32

const (
	// Pass relays bytes both ways.
	Pass Mode = iota
	// Refuse resets every new connection at once and cuts the open ones,
	// as a server that went away does: pooled client connections fail on
	// their next use instead of lingering.
	Refuse
	// BlackHole accepts connections and reads what they send but never
	// answers, as a partitioned network does; open connections stop
	// relaying too. Leaving BlackHole closes every connection that was
	// held, since their streams lost bytes and cannot be resumed.
	BlackHole
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Refuse:
		return "refuse"
	case BlackHole:
		return "black-hole"
	}
	return "unknown"
}

// TCP relays TCP connections from a loopback port to a target address,
// applying the current Mode and latency.
type TCP struct {
	target  string
	ln      net.Listener
	mode    atomic.Int32
	latency atomic.Int64 // nanoseconds

	mu     sync.Mutex
	conns  map[*tcpConn]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted, refused, held, dropped atomic.Int64
}

// TCPStats counts what a TCP proxy did since it started.
type TCPStats struct {
	// Accepted is every connection accepted.
	Accepted int64
	// Refused is connections reset on arrival or cut by Refuse.
	Refused int64
	// Held is connections that were black-holed (new or open ones).
	Held int64
	// Dropped is chunks that clients sent into the black hole: proof
	// that somebody tried to talk through it.
	Dropped int64
	// Open is connections open now.
	Open int
}

// NewTCP starts a TCP proxy to target (host:port) on a loopback port; it
// stops when the test ends.
func NewTCP(tb testing.TB, target string) *TCP {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: %v", err)
	}
	p := &TCP{target: target, ln: ln, conns: map[*tcpConn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *TCP) Addr() string { return p.ln.Addr().String() }

// URL is http:// and the proxy's address, for HTTP clients of the target.
func (p *TCP) URL() string { return "http://" + p.Addr() }

// Mode returns the current mode.
func (p *TCP) Mode() Mode { return Mode(p.mode.Load()) }

// SetMode switches to m. Entering Refuse cuts every open connection;
// entering BlackHole stops relaying on every open connection; leaving
// BlackHole closes the connections it held.
func (p *TCP) SetMode(m Mode) {
	old := Mode(p.mode.Swap(int32(m)))
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		switch {
		case m == Refuse:
			p.refused.Add(1)
			c.reset()
		case m == BlackHole:
			if !c.held.Swap(true) {
				p.held.Add(1)
			}
		case old == BlackHole && c.held.Load():
			c.reset()
		}
	}
}

// SetLatency delays every chunk a client sends by d before it is relayed
// (zero: none). For request and response protocols such as HTTP that is
// about d per request.
func (p *TCP) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Stats returns the proxy's counts.
func (p *TCP) Stats() TCPStats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return TCPStats{Accepted: p.accepted.Load(), Refused: p.refused.Load(), Held: p.held.Load(), Dropped: p.dropped.Load(), Open: open}
}

// Close stops accepting, cuts every connection and waits for the relays to
// end. It is called when the test ends; calling it again does nothing.
func (p *TCP) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.reset()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *TCP) serve() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.accepted.Add(1)
		c := &tcpConn{client: conn, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.reset()
			return
		}
		// Registered before the mode is read, so that a concurrent
		// SetMode either sees this connection or is seen by it.
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(c)
	}
}

func (p *TCP) forget(c *tcpConn) {
	c.reset()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

func (p *TCP) handle(c *tcpConn) {
	defer p.forget(c)
	switch p.Mode() {
	case Refuse:
		p.refused.Add(1)
		return
	case BlackHole:
		if !c.held.Swap(true) {
			p.held.Add(1)
		}
		// Read and drop until the mode changes (which closes the
		// connection) or the client gives up.
		p.drain(c.client)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !c.setUpstream(up) {
		return // cut while dialling
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.relay(c, up, c.client, true)
		c.reset()
	}()
	p.relay(c, c.client, up, false)
}

// relay copies src to dst chunk by chunk. Chunks read while the connection
// is held are dropped, so a held connection reads but never answers.
func (p *TCP) relay(c *tcpConn, dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromClient && c.held.Load() {
			p.dropped.Add(1)
		}
		if n > 0 && !c.held.Load() {
			if d := time.Duration(p.latency.Load()); fromClient && d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
			if !c.held.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *TCP) drain(c net.Conn) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.dropped.Add(1)
		}
		if err != nil {
			return
		}
	}
}

// tcpConn is one relayed connection.
type tcpConn struct {
	client net.Conn
	held   atomic.Bool

	mu       sync.Mutex
	upstream net.Conn
	cut      bool
	done     chan struct{} // closed by reset
}

func (c *tcpConn) setUpstream(up net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		up.Close()
		return false
	}
	c.upstream = up
	return true
}

// reset closes both sides; the client's with a TCP reset rather than an
// orderly close, as a crashed or firewalled server does.
func (c *tcpConn) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return
	}
	c.cut = true
	close(c.done)
	if tc, ok := c.client.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.client.Close()
	if c.upstream != nil {
		c.upstream.Close()
	}
}
