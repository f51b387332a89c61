package caddymodule

import (
	"errors"
	"io"
	"sync"
)

// replayBody lets a request body be sent twice without waiting for it: the
// first attempt streams it from the client, keeping a copy of what it reads
// (at most the Content-Length, itself within replay_limit); a retry reads
// that copy, then whatever of the body the first attempt left unread. Once a
// retry starts, the first attempt's reader is cut off, so the two never
// interleave.
type replayBody struct {
	mu    sync.Mutex
	src   io.Reader
	seen  []byte
	limit int64 // the declared length: the copy never holds more
	gen   int
}

// copies recycles the copies' memory between requests: without it, every
// replayable request allocates (and zeroes, and later collects) a buffer the
// size of its body.
var copies sync.Pool // of *[]byte

// newReplayBody wraps a body of the declared length size. The copy grows
// with what arrives rather than being allocated at size up front: a client
// may declare a large body and send little or nothing, and many such
// requests must not hold replay_limit each.
func newReplayBody(src io.Reader, size int64) *replayBody {
	b := &replayBody{src: src, limit: size}
	if bp, _ := copies.Get().(*[]byte); bp != nil {
		b.seen = (*bp)[:0]
	}
	return b
}

// release ends every attempt's reading and recycles the copy. Call it when
// the request is done.
func (b *replayBody) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen = -1
	if b.seen != nil {
		s := b.seen[:0]
		copies.Put(&s)
		b.seen = nil
	}
}

// attempt returns the body reader of the next attempt.
func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return &attemptBody{b: b, gen: b.gen}
}

var errBodySuperseded = errors.New("request body taken over by a retry")

type attemptBody struct {
	b   *replayBody
	gen int
	off int
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.gen != b.gen {
		return 0, errBodySuperseded
	}
	if a.off < len(b.seen) {
		n := copy(p, b.seen[a.off:])
		a.off += n
		return n, nil
	}
	n, err := b.src.Read(p)
	if a.gen == 1 && int64(len(b.seen)+n) <= b.limit {
		// Only the first attempt records: a retry is the last attempt.
		b.seen = append(b.seen, p[:n]...)
	}
	a.off += n
	return n, err
}

func (a *attemptBody) Close() error { return nil }
