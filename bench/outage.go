package main

import (
	"fmt"
	"net/http"
	"time"
)

// outageResult is what a token endpoint outage cost.
type outageResult struct {
	duration                         time.Duration
	requests, ok, unavailable, other int
	tokenRequests                    int64
	vaultRequests                    int64
	recoveryRefreshes                int
}

// tokenOutage takes the token endpoint down, makes the stored token expire,
// starts a process on port and sends it outageRate requests per second for
// d, then brings the endpoint back and waits for the connection to recover.
func tokenOutage(w *world, port int, d time.Duration) (outageResult, error) {
	r := outageResult{duration: d}
	w.tokens.Down.Store(true)
	defer w.tokens.Down.Store(false)
	if err := expireInVault(w); err != nil {
		return r, err
	}
	p, err := startProc(w, port)
	if err != nil {
		return r, err
	}
	defer p.stop()
	tokens0, vault0 := w.tokens.Total(), w.connCalls.Load()
	tick := time.NewTicker(time.Second / outageRate)
	defer tick.Stop()
	c := newClient(4)
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		r.requests++
		resp, err := c.Get(p.url("/demo/items"))
		if err != nil {
			r.other++
			continue
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			r.ok++
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
			r.unavailable++
		default:
			r.other++
		}
	}
	r.tokenRequests, r.vaultRequests = w.tokens.Total()-tokens0, w.connCalls.Load()-vault0
	before := w.tokens.Count("refresh_token")
	w.tokens.Down.Store(false)
	for deadline := time.Now().Add(90 * time.Second); ; {
		if do(c, http.MethodGet, p.url("/demo/items"), nil) {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the connection did not recover within 90 s of the outage")
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.recoveryRefreshes = w.tokens.Count("refresh_token") - before
	return r, nil
}
