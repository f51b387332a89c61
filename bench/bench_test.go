package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
		if row.oauth.failures != 0 || row.static.failures != 0 || row.oauth.requests == 0 || row.static.requests == 0 {
			t.Errorf("%s: %d and %d failures of %d and %d requests", row.name, row.oauth.failures, row.static.failures, row.oauth.requests, row.static.requests)
		}
		// Each of oauthconn_proxy's requests (and only those) reached
		// the https upstream once.
		if tls := row.http1 + row.http2; strings.Contains(row.name, "TLS") && tls != int64(row.oauth.requests) {
			t.Errorf("%s: the https upstream had %d of oauthconn_proxy's requests, want %d", row.name, tls, row.oauth.requests)
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

// TestLoadPair: a paired run counts each request for the side it went to,
// gives both sides their turns, and splits the CPU readings between them.
func TestLoadPair(t *testing.T) {
	var hits [2]atomic.Int64
	srv := func(i int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits[i].Add(1) }))
		t.Cleanup(s.Close)
		return s
	}
	a, b := srv(0), srv(1)
	var reads atomic.Int64 // a CPU clock that ticks once per reading
	run := loadPair(newClient(8), http.MethodGet, a.URL, b.URL, nil, 4, 6*pairSlot, true,
		func() time.Duration { return time.Duration(reads.Add(1)) })
	if run.a.requests == 0 || run.b.requests == 0 || run.a.failures+run.b.failures != 0 {
		t.Errorf("requests %d and %d, failures %d and %d", run.a.requests, run.b.requests, run.a.failures, run.b.failures)
	}
	if int64(run.a.requests) != hits[0].Load() || int64(run.b.requests) != hits[1].Load() {
		t.Errorf("counted %d and %d requests, the servers had %d and %d", run.a.requests, run.b.requests, hits[0].Load(), hits[1].Load())
	}
	// 6 turns: a reading at the start and one at the end of each.
	if reads.Load() != 7 || run.cpuA != 3 || run.cpuB != 3 {
		t.Errorf("%d CPU readings, split %d and %d; want 7, 3 and 3", reads.Load(), run.cpuA, run.cpuB)
	}
}
