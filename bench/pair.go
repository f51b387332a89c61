package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// pairSlot is how long each side of a paired run has the clients before
// the other side gets them. The machine's speed changes from one second to
// the next (a neighbour on the host, the other CPU's work): slots this
// short put both sides in the same conditions, yet are long enough that
// the few requests in flight when a slot ends (their latency is a few
// milliseconds) are a small part of it.
const pairSlot = 100 * time.Millisecond

// pairRun is what a paired run measured: each side's requests, and the
// proxy process's CPU time during each side's slots.
type pairRun struct {
	a, b       result
	cpuA, cpuB time.Duration
}

// loadPair sends requests from conc workers to urlA and urlB in turns of
// pairSlot, for d in all (half of it each: d is rounded to an even number
// of turns, at least 2), aFirst saying which side has
// the first slot. A request belongs to the side whose slot it started in;
// each side's elapsed time is the sum of its slots. cpu, if not nil, is
// read at each change of slot, and its increase goes to the slot's side.
// Unlike a run of each proxy on its own, both meet the machine's same
// moments.
func loadPair(c *http.Client, method, urlA, urlB string, body []byte, conc int, d time.Duration, aFirst bool, cpu func() time.Duration) pairRun {
	var side atomic.Bool // true: b's slot
	side.Store(!aFirst)
	var stop atomic.Bool
	var mu sync.Mutex
	var run pairRun
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var latA, latB []time.Duration
			var failA, failB int
			for !stop.Load() {
				onB := side.Load()
				url := urlA
				if onB {
					url = urlB
				}
				t0 := time.Now()
				ok := do(c, method, url, body)
				lat := time.Since(t0)
				switch {
				case onB:
					latB = append(latB, lat)
					failB += fail(ok)
				default:
					latA = append(latA, lat)
					failA += fail(ok)
				}
			}
			mu.Lock()
			run.a.latencies = append(run.a.latencies, latA...)
			run.b.latencies = append(run.b.latencies, latB...)
			run.a.failures += failA
			run.b.failures += failB
			mu.Unlock()
		}()
	}
	// The slots: each ends at a fixed offset from the start, so that a
	// late timer does not lengthen the run.
	start := time.Now()
	last, cpu0 := start, readCPU(cpu)
	slots := max(2, int(d/pairSlot)/2*2)
	for i := 1; i <= slots; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * pairSlot)))
		onB := side.Load()
		if i == slots {
			stop.Store(true)
		} else {
			side.Store(!onB)
		}
		now, cpu1 := time.Now(), readCPU(cpu)
		if onB {
			run.b.elapsed += now.Sub(last)
			run.cpuB += cpu1 - cpu0
		} else {
			run.a.elapsed += now.Sub(last)
			run.cpuA += cpu1 - cpu0
		}
		last, cpu0 = now, cpu1
	}
	wg.Wait()
	run.a.requests, run.b.requests = len(run.a.latencies), len(run.b.latencies)
	return run
}

func readCPU(cpu func() time.Duration) time.Duration {
	if cpu == nil {
		return 0
	}
	return cpu()
}

func fail(ok bool) int {
	if ok {
		return 0
	}
	return 1
}
