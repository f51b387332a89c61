package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFaultSoak proves that the steady state stays steady: two minutes of
// 10 requests a second on 6 s tokens (refreshed 2 s before expiry, the
// record revalidated every 2 s) fail no request, refresh about as often as
// the margin predicts (one per 4 s of lifetime), never redeem a refresh
// token twice, and leave the binary's memory and goroutines flat. Skipped
// with -short.
func TestFaultSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes two minutes")
	}
	const (
		duration = 2 * time.Minute
		warmup   = 20 * time.Second
		due      = 4 * time.Second // token lifetime 6 s minus refresh_margin 2 s
	)
	w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portSoak), 0)
	r := startBinary(t, portSoak, w.vaultStore(), "refresh_margin 2s\nmax_wait 3s\nrevalidate_interval 2s",
		w.replicaEnv(portSoak), "")
	connect(t, &sidecar{base: r.url()}, newBrowser())
	app := r.url() + "/demo/items"
	admin := fmt.Sprintf("http://localhost:%d", portSoak+100)

	start := time.Now()
	refreshesBefore := w.tok.Succeeded("refresh_token")
	l := startLoad(t, 10, duration, app)
	time.Sleep(warmup)
	warm := sample(t, r, admin)
	<-l.done
	end := sample(t, r, admin)
	outs := l.Stop()
	elapsed := time.Since(start)
	refreshes := w.tok.Succeeded("refresh_token") - refreshesBefore

	if n, ex := failing(outs, func(o outcome) bool { return o.status != http.StatusOK }); n > 0 {
		t.Errorf("%d of %d requests failed (%s), e.g.\n\t%s", n, len(outs), summary(outs), ex)
	}
	checkWaits(t, outs)
	// One refresh per 4 s, each triggered by the first request after it
	// falls due (within 100 ms) and taking a few milliseconds.
	expected := float64(elapsed) / float64(due)
	if lo, hi := int(expected*0.8), int(expected*1.05)+1; refreshes < lo || refreshes > hi {
		t.Errorf("%d refreshes in %v, want %d to %d (one per %v)", refreshes, elapsed.Round(time.Second), lo, hi, due)
	}
	// A proactive refresh may still be on its way when the load stops:
	// it is counted when it starts and as succeeded when it is answered.
	settled := time.Now().Add(5 * time.Second)
	for w.tok.Count("refresh_token") != w.tok.Succeeded("refresh_token") && time.Now().Before(settled) {
		time.Sleep(50 * time.Millisecond)
	}
	if w.tok.Count("refresh_token") != w.tok.Succeeded("refresh_token") {
		t.Errorf("token requests that did not succeed with nothing failing: %s", w.tokenReport())
	}
	w.checkRotation(t, 1)
	t.Logf("%d requests, %d refreshes; after warm-up %s, at the end %s", len(outs), refreshes, warm, end)
	if end.rss > warm.rss*3/2+32<<20 {
		t.Errorf("RSS grew from %d MiB to %d MiB", warm.rss>>20, end.rss>>20)
	}
	if end.heap > warm.heap*2+16<<20 {
		t.Errorf("heap in use grew from %d MiB to %d MiB", warm.heap>>20, end.heap>>20)
	}
	if end.goroutines > warm.goroutines+50 {
		t.Errorf("goroutines grew from %d to %d", warm.goroutines, end.goroutines)
	}
}

// usage is a process's memory and goroutines at one time.
type usage struct {
	rss, heap  int64
	goroutines int64
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %d MiB, heap %d MiB, %d goroutines", u.rss>>20, u.heap>>20, u.goroutines)
}

// sample reads the replica's RSS from /proc and its Go heap and goroutines
// from the metrics on its admin endpoint.
func sample(t *testing.T, r *process, admin string) usage {
	t.Helper()
	var u usage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			u.rss = kb << 10
		}
	}
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			u.heap = int64(v)
		case "go_goroutines":
			u.goroutines = int64(v)
		}
	}
	if u.rss == 0 || u.heap == 0 || u.goroutines == 0 {
		t.Fatalf("could not sample the replica's memory: %s", u)
	}
	return u
}
