package main

import (
	"fmt"
	"math"
	"time"
)

// Targets the report checks its figures against (issue "Scale out").
const (
	targetRatio       = 0.98                   // oauthconn_proxy's throughput against reverse_proxy's
	targetAddedP99    = 100 * time.Microsecond // p99 added to reverse_proxy's
	targetHeapPerConn = 512                    // bytes of heap per cached connection
	targetVaultPerRef = 3                      // Vault requests per refresh, happy path
)

// summary prints every figure beside its target: the table a reader checks
// first, the sections below say how each was measured.
func (r *report) summary(p func(string, ...any)) {
	p("### Figures and targets")
	p("")
	p("| figure | target | this run | met |")
	p("| --- | --- | ---: | :---: |")
	row := func(figure, target, value string, met bool) {
		p("| %s | %s | %s | %s |", figure, target, value, yes(met))
	}
	for _, o := range r.overhead {
		ratio := o.ratio()
		added := o.addedP99()
		row("throughput ratio, "+o.name, fmt.Sprintf("≥ %.2f×", targetRatio), fmt.Sprintf("%.3f×", ratio), ratio >= targetRatio)
		row("added p99 (median of the rounds), "+o.name, "≤ +"+ms(targetAddedP99), ms(added), added <= targetAddedP99)
	}
	// None on the request path; the background revalidation reads a
	// cached connection once a minute.
	floor := r.revalidationFloor()
	row(fmt.Sprintf("Vault requests on the connection's record during %.0f s of load on one connection over %.0f s, fresh token", r.hotTime.Seconds(), r.hotSpan.Seconds()),
		fmt.Sprintf("≤ %d (background revalidation, once a minute; none per request)", floor),
		fmt.Sprintf("%d (%.2f per 10,000 requests; and %d of the state sweep)", r.hotVault, r.vaultPer10k, r.hotOther), r.hotVault <= floor)
	if overheadOnly {
		p("")
		return
	}
	row("refresh storm: refreshes, failed requests", "1, 0", fmt.Sprintf("%d, %d", r.stormRefreshes, r.stormFailures), r.stormRefreshes == 1 && r.stormFailures == 0)
	row("3 replicas: refreshes, failed requests", "1, 0", fmt.Sprintf("%d, %d", r.replicaRefreshes, r.replicaFailures), r.replicaRefreshes == 1 && r.replicaFailures == 0)
	perRefresh := float64(r.stormVault) / float64(max(r.stormRefreshes, 1))
	row("Vault requests per refresh", fmt.Sprintf("≤ %d", targetVaultPerRef), fmt.Sprintf("%.1f", perRefresh), perRefresh <= targetVaultPerRef)
	if n := len(r.memory); n > 0 {
		m := r.memory[n-1]
		row(fmt.Sprintf("heap per cached connection at %d", m.connections), fmt.Sprintf("≤ %d bytes", targetHeapPerConn),
			fmt.Sprintf("%.0f bytes", m.heapPerConn), m.heapPerConn <= targetHeapPerConn)
		p("| cache hit p99, %d goroutines, %d connections | reported | %s | |", hitWorkers, m.connections, us(m.hitP99))
		p("| slowest miss while evicting, %d connections | reported | %s | |", m.connections, ms(m.longestMiss))
	}
	// Backoff from 1 s, doubling: tries at about 0, 1, 3, 7, 15, … s, and
	// one more for the jitter.
	tries := int64(math.Log2(r.outage.duration.Seconds()+1)) + 2
	row(fmt.Sprintf("token requests during a %s outage at %d requests/s", r.outage.duration, outageRate),
		fmt.Sprintf("≤ %d (backoff)", tries), fmt.Sprint(r.outage.tokenRequests), r.outage.tokenRequests <= tries && r.outage.other == 0)
	if w := r.wave; w != nil {
		before := w.n - w.unrefreshed - w.late - w.lost
		row(fmt.Sprintf("refresh wave: connections refreshed before expiry (%d due within %s, 3 replicas)", w.n, waveSpread(w.n)),
			fmt.Sprint(w.n), fmt.Sprint(before), before == w.n)
		row("refresh wave: lost connections, double redemptions, failed requests", "0, 0, 0",
			fmt.Sprintf("%d, %d, %d", w.lost, w.refused, w.other+w.warmFailures), w.lost+w.refused+w.other+w.warmFailures == 0)
		row("refresh wave: most token requests in flight", fmt.Sprintf("≤ %d (3 × max_concurrent_refreshes)", waveReplicas*waveConcurrency),
			fmt.Sprint(w.maxTokenFlight), w.maxTokenFlight <= waveReplicas*waveConcurrency)
		p("| refresh wave: duration, Vault requests/s, peak RSS per replica | reported | %.0f s, %.0f/s, %s | |",
			w.duration.Seconds(), float64(w.vaultWave)/max(w.duration.Seconds(), 1), w.rssList())
	}
	p("")
}

// revalidationFloor is how many Vault reads the overhead runs may make: one
// per started minute (the default revalidate_interval) of the time they
// span, the static runs between them included.
func (r *report) revalidationFloor() int64 {
	return int64(r.hotSpan/time.Minute) + 1
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
