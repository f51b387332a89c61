package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// processCPU returns the CPU time pid's threads have run so far, to the
// nanosecond (the first field of each /proc/<pid>/task/<tid>/schedstat),
// or 0 where the kernel does not say. Read at each turn of a paired run,
// it gives each proxy's own CPU per request, which the load generator's
// scheduling does not blur as it does throughput.
func processCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "schedstat"))
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			total += time.Duration(ns)
		}
	}
	return total
}
