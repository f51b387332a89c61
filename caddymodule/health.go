package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// StoreHealthChecker is implemented by stores that can tell whether they
// are usable beyond answering reads and writes, such as the Vault store
// (reachable and unsealed). It is optional: every store is also checked by
// writing, reading and deleting a probe record.
type StoreHealthChecker interface {
	// Health returns nil when the store is usable, else why not, without
	// a secret.
	Health(ctx context.Context) error
}

// storeCapabilityChecker is implemented by stores that can ask whether
// their credentials allow what the proxy does on a record path (the Vault
// store, with sys/capabilities-self).
type storeCapabilityChecker interface {
	CheckCapabilities(ctx context.Context, path string) error
}

// healthInterval is how long one store check answers for: readiness probes
// arriving faster than this share one result, so that a busy load balancer
// cannot turn them into load on the store.
const healthInterval = time.Second

// healthTimeout bounds one store check.
const healthTimeout = 5 * time.Second

// checkStore checks that s is healthy (StoreHealthChecker), that its
// credentials carry the capabilities the proxy needs, and that a record
// can be written with check-and-set, read back and deleted.
func checkStore(ctx context.Context, s RecordStore) error {
	if h, ok := s.(StoreHealthChecker); ok {
		if err := h.Health(ctx); err != nil {
			return err
		}
	}
	// A probe path of its own per check, so that replicas checking the
	// same store at once do not collide on it.
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := "health/probe-" + hex.EncodeToString(b[:])
	if c, ok := s.(storeCapabilityChecker); ok {
		if err := c.CheckCapabilities(ctx, p); err != nil {
			return err
		}
	}
	want := map[string]string{"probe": p}
	if _, err := s.Put(ctx, p, want, 0); err != nil {
		return fmt.Errorf("writing a probe record: %w", err)
	}
	e, err := s.Get(ctx, p)
	delErr := s.Delete(ctx, p)
	if err != nil {
		return fmt.Errorf("reading back a probe record: %w", err)
	}
	if e.Data["probe"] != p {
		return errors.New("a probe record read back differs from what was written")
	}
	if delErr != nil {
		return fmt.Errorf("deleting a probe record: %w", delErr)
	}
	return nil
}

// storeHealth caches the result of the store check with its time and runs
// at most one check at a time: callers arriving while one runs wait for its
// result rather than starting their own.
type storeHealth struct {
	check func(context.Context) error
	now   func() time.Time

	run sync.Mutex // held while a check runs

	mu  sync.Mutex // guards at and err
	at  time.Time
	err error
}

func newStoreHealth(check func(context.Context) error) *storeHealth {
	return &storeHealth{check: check, now: time.Now}
}

func (h *storeHealth) cached() (error, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at.IsZero() || h.now().Sub(h.at) >= healthInterval {
		return nil, false
	}
	return h.err, true
}

// get returns the store's health, checking it when the last result is
// older than healthInterval.
func (h *storeHealth) get(ctx context.Context) error {
	if err, ok := h.cached(); ok {
		return err
	}
	h.run.Lock()
	defer h.run.Unlock()
	if err, ok := h.cached(); ok {
		return err
	}
	// The check outlives a caller that gives up: the others wait for it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthTimeout)
	err := h.check(cctx)
	cancel()
	h.mu.Lock()
	h.at, h.err = h.now(), err
	h.mu.Unlock()
	return err
}

// readyz answers 200 when the store is usable and 503 with the reason
// otherwise, for load balancers and orchestrators: a replica that cannot
// reach its store can neither hand out tokens it has not cached nor save
// new connections.
func (h *ConnectHandler) readyz(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	if err := h.app.health.get(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "store": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// livez answers 200 while the process serves requests.
func (h *ConnectHandler) livez(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	writeJSON(w, http.StatusOK, map[string]string{"status": "live"})
}
