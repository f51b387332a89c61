package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
)

// pinning places the overhead runs (sections 1 and 2) on separate CPUs:
// the proxy process alone on the last CPU, with GOMAXPROCS 1, and this
// process (the load generator and the upstreams) on the others. Both
// proxies compared run in that one process, so they get the same CPU;
// what pinning removes is the scheduler moving the load generator onto
// the proxy's CPU for some rounds and not others, which on two cores
// moved identical runs by ±6%. Vault and Hydra, idle during those
// sections, are not pinned.
type pinning struct {
	proxy, rest string // taskset CPU lists
	all         string
	nRest       int // CPUs in rest
	procs       int // this process's GOMAXPROCS before self
}

// newPinning returns the pinning for this machine, or nil if it has one
// CPU or no taskset (util-linux).
func newPinning() *pinning {
	n := runtime.NumCPU()
	if n < 2 {
		return nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil
	}
	return &pinning{
		proxy: strconv.Itoa(n - 1),
		rest:  cpuRange(0, n-2),
		all:   cpuRange(0, n-1),
		nRest: n - 1,
	}
}

func cpuRange(from, to int) string {
	if from == to {
		return strconv.Itoa(from)
	}
	return fmt.Sprintf("%d-%d", from, to)
}

// command wraps the proxy's command line so that it starts on its CPU.
func (p *pinning) command(bin string, args ...string) *exec.Cmd {
	return exec.Command("taskset", append([]string{"-c", p.proxy, bin}, args...)...)
}

// self moves every thread of this process to the other CPUs, and gives it
// as many Ps as it has CPUs there: more Ps than CPUs would leave the
// kernel to preempt the load generator's threads at random, the proxy
// then idling for want of requests in some rounds and not others.
func (p *pinning) self() error {
	p.procs = runtime.GOMAXPROCS(p.nRest)
	return p.set(p.rest)
}

// release gives this process every CPU again.
func (p *pinning) release() error {
	if p.procs > 0 {
		runtime.GOMAXPROCS(p.procs)
	}
	return p.set(p.all)
}

func (p *pinning) set(cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset: %v: %s", err, out)
	}
	return nil
}

// describe says where the overhead runs ran, for the report.
func (p *pinning) describe() string {
	if p == nil {
		return "not pinned: the load generator, the upstream and the proxy share every CPU"
	}
	return fmt.Sprintf("the proxy pinned to CPU %s (GOMAXPROCS=1), the load generator and the upstreams to CPU %s", p.proxy, p.rest)
}
