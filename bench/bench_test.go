package main

import (
	"io"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// TestSmoke runs the benchmark for seconds so that it cannot rot. It checks
// the counts, never the timings: no Vault call on the hot path (but the
// background revalidation, once a minute), one refresh
// per storm, also across replicas, and no failed request.
func TestSmoke(t *testing.T) {
	testservices.Vault(t)
	testservices.Hydra(t)
	r, err := run(smoke, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if floor := r.revalidationFloor(); r.hotVault > floor {
		t.Errorf("%d Vault requests during %s of load on one fresh connection over %s, want at most %d (the background revalidation)", r.hotVault, r.hotTime, r.hotSpan, floor)
	}
	if r.stormRefreshes != 1 || r.stormFailures != 0 {
		t.Errorf("storm: %d refreshes, %d failures; want 1 and 0", r.stormRefreshes, r.stormFailures)
	}
	if r.replicaRefreshes != 1 || r.replicaFailures != 0 {
		t.Errorf("replicas: %d refreshes, %d failures; want 1 and 0", r.replicaRefreshes, r.replicaFailures)
	}
	for _, row := range r.overhead {
		if row.oauth.failures != 0 || row.static.failures != 0 || row.oauth.requests == 0 {
			t.Errorf("%s: %d and %d failures of %d requests", row.name, row.oauth.failures, row.static.failures, row.oauth.requests)
		}
	}
	if perRefresh := float64(r.stormVault) / float64(max(r.stormRefreshes, 1)); perRefresh > 3 {
		t.Errorf("Vault requests per refresh = %.1f, want at most 3", perRefresh)
	}
	// A 3 s outage at 10 requests/s: backoff lets through at most the
	// tries at about 0, 1 and 3 s, not one per request.
	if o := r.outage; o.tokenRequests > 3 || o.other != 0 || o.unavailable == 0 || o.recoveryRefreshes != 1 {
		t.Errorf("outage: %d token requests, %d unexpected answers, %d 503s, %d refreshes after; want ≤ 3, 0, > 0, 1", o.tokenRequests, o.other, o.unavailable, o.recoveryRefreshes)
	}
	if r.wave == nil || r.wave.failed() != "" {
		t.Errorf("refresh wave: %s", waveFailure(r.wave))
	}
	if len(r.memory) == 0 || r.memory[0].heapPerConn <= 0 || r.startup <= 0 {
		t.Errorf("memory %v, startup %v: not measured", r.memory, r.startup)
	}
}
