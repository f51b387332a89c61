// Command bench measures caddy-oauthconn on this machine, in one run, side
// by side: proxy overhead against plain Caddy reverse_proxy, Vault calls on
// the hot path, a refresh storm, replicas sharing Vault, memory per cached
// connection, and startup. It needs a Vault and an Ory Hydra; bench/run
// starts them and writes the report to BENCHMARKS.md.
//
//	go run ./bench [-smoke]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
)

// settings are a run's sizes.
type settings struct {
	rounds      int
	duration    time.Duration
	concurrency int
	storm       int
	memory      []int
	outage      time.Duration // of the token endpoint, under steady load
	wave        int           // connections falling due together (0: no wave)
}

var (
	full  = settings{rounds: 16, duration: time.Second, concurrency: 16, storm: 1000, memory: []int{1000, 10000, 100000, 1000000}, outage: 20 * time.Second, wave: 10000}
	smoke = settings{rounds: 1, duration: 300 * time.Millisecond, concurrency: 4, storm: 100, memory: []int{1000}, outage: 3 * time.Second, wave: 30}
)

// outageRate is the steady load, in requests per second, during the token
// endpoint outage.
const outageRate = 10

// profileDir, if set, receives CPU profiles of the overhead runs.
var profileDir string

// overheadOnly stops the run after sections 1 and 2.
var overheadOnly bool

// sameProxy makes section 1 compare reverse_proxy with itself (an A/A
// run): what its figures then show is the method's own noise.
var sameProxy bool

// pin places the overhead sections' proxy and load generator on separate
// CPUs, where the machine allows it (pinning).
var pin bool

// admin is the admin address of the process on port: on (for pprof) only
// while profiling the first process.
func (w *world) admin(port int) string {
	if profileDir != "" && port == w.publicPort {
		return "localhost:2999"
	}
	return "off"
}

// profile captures a CPU profile of the first process over the d that f
// runs for (a paired run: both proxies' turns in one profile).
func profile(name string, d time.Duration, f func()) {
	if profileDir == "" {
		f()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://localhost:2999/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		out, err := os.Create(filepath.Join(profileDir, name+".pprof"))
		if err != nil {
			return
		}
		defer out.Close()
		io.Copy(out, resp.Body)
	}()
	f()
	<-done
}

// world is what the scenarios share: the servers and the built binary.
type world struct {
	pin        *pinning // nil: the overhead runs are not pinned
	bin        string
	tmp        string
	hydra      hydradev.Hydra
	client     hydradev.Client
	tokens     *hydradev.TokenCounter
	tokenURL   string
	vault      *vaultapi.Client
	vaultURL   string // the counting proxy in front of Vault
	vaultCalls atomic.Int64
	// connCalls counts the Vault requests on connections' token records
	// (not the startup check, pending authorizations or health probes).
	connCalls atomic.Int64
	upstream  string // host:port
	// tlsUpstream is the same API over TLS (its certificate in tlsCA);
	// upstreamProtos counts its requests by HTTP major version.
	tlsUpstream, tlsCA string
	upstreamProtos     [3]atomic.Int64
	prefix             string
	publicPort         int
}

// report is every figure of a run.
type report struct {
	machine     string
	pinned      string // where the overhead runs ran
	settings    settings
	overhead    []overheadRow
	vaultPer10k float64
	// hotVault is how many Vault requests on the connection's record the
	// oauthconn_proxy runs made, over hotTime of load on one connection,
	// which hotSpan (the first run's start to the last one's end) spans;
	// hotOther the other Vault requests meanwhile (the sweep of expired
	// authorization states, once a minute).
	hotVault, hotOther                int64
	hotTime, hotSpan                  time.Duration
	stormRefreshes, stormFailures     int
	stormVault                        int64
	storm                             result
	outage                            outageResult
	replicaRefreshes, replicaFailures int
	replicas                          result
	startup                           time.Duration
	memory                            []memResult
	wave                              *waveResult
}

type overheadRow struct {
	name          string
	oauth, static result
	// Where the row's requests go: method, body and the two proxies'
	// URLs; protos counts the upstream's requests by HTTP version.
	method       string
	body         []byte
	oauthURL     string
	staticURL    string
	http1, http2 int64
	// rounds are each round's throughput ratio; p99s each round's p99
	// of oauthconn_proxy less reverse_proxy's.
	rounds []float64
	p99s   []time.Duration
	// oauthCPU and staticCPU are the proxy process's CPU time during
	// each proxy's turns.
	oauthCPU, staticCPU time.Duration
}

// cpuPerRequest returns each proxy's CPU time per request, or zeros where
// the kernel does not say.
func (o overheadRow) cpuPerRequest() (oauth, static time.Duration) {
	if o.oauth.requests == 0 || o.static.requests == 0 {
		return 0, 0
	}
	return o.oauthCPU / time.Duration(o.oauth.requests), o.staticCPU / time.Duration(o.static.requests)
}

// ratio is the row's throughput ratio: the median of its rounds' ratios.
// In each round the two proxies take turns of pairSlot (loadPair), so a
// round's ratio compares them under the same conditions; the median
// leaves out the rounds in which the machine's other work (or its host's)
// fell more on one of the two.
func (o overheadRow) ratio() float64 {
	if len(o.rounds) == 0 {
		return o.oauth.throughput() / o.static.throughput()
	}
	return median(o.rounds)
}

// addedP99 is the p99 oauthconn_proxy adds: the median of the rounds'
// differences, for the reason ratio takes the median. (The p99 of all
// rounds together is decided by the few rounds in which something else
// stalled the machine.)
func (o overheadRow) addedP99() time.Duration {
	if len(o.p99s) == 0 {
		return o.oauth.percentile(0.99) - o.static.percentile(0.99)
	}
	return median(o.p99s)
}

// median returns v's middle value, or the mean of its two middle values.
func median[T ~float64 | ~int64](v []T) T {
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// quartiles returns the first and third quartiles of v (nearest rank).
func quartiles(v []float64) (q1, q3 float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[(len(s)-1)/4], s[(3*(len(s)-1)+3)/4]
}

func main() {
	smokeFlag := flag.Bool("smoke", false, "run for seconds, to check the benchmark still works")
	flag.StringVar(&profileDir, "profile", "", "write CPU profiles of the proxy process during the overhead runs to this directory")
	flag.BoolVar(&overheadOnly, "overhead", false, "run only the overhead and hot-path sections (1 and 2)")
	flag.BoolVar(&sameProxy, "same-proxy", false, "with -overhead: send both sides of each comparison to reverse_proxy, to measure the method's noise")
	memOnly := flag.String("memory", "", "measure only the cache (section 5), at these comma-separated sizes; needs no servers")
	waveN := flag.Int("wave", -1, "connections in the refresh wave (default 10000, -smoke 30; 0 skips it)")
	flag.BoolVar(&waveOnly, "wave-only", false, "run only the refresh wave")
	flag.BoolVar(&pin, "pin", true, "run the overhead sections with the proxy and the load generator on separate CPUs (taskset)")
	flag.Parse()
	if *memOnly != "" {
		memoryOnly(*memOnly)
		return
	}
	s := full
	if *smokeFlag {
		s = smoke
	}
	if *waveN >= 0 {
		s.wave = *waveN
	}
	r, err := run(s, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if waveOnly && r.wave != nil {
		r.wave.markdown(func(format string, a ...any) { fmt.Printf(format+"\n", a...) })
		return
	}
	r.markdown(os.Stdout)
}

func listen(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go http.Serve(ln, h)
	return ln.Addr().String(), nil
}

func setup(logw io.Writer) (*world, error) {
	w := &world{hydra: hydradev.Hydra{PublicURL: os.Getenv("HYDRA_PUBLIC_URL"), AdminURL: os.Getenv("HYDRA_ADMIN_URL")}}
	if pin {
		w.pin = newPinning()
	}
	if w.hydra.PublicURL == "" || os.Getenv("VAULT_ADDR") == "" {
		return nil, fmt.Errorf("needs VAULT_ADDR, VAULT_TOKEN, HYDRA_PUBLIC_URL and HYDRA_ADMIN_URL (bench/run sets them)")
	}
	var err error
	if w.tmp, err = os.MkdirTemp("", "oauthconn-bench-"); err != nil {
		return nil, err
	}
	w.bin = filepath.Join(w.tmp, "caddy-oauthconn")
	fmt.Fprintln(logw, "building the binary")
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("go", "build", "-C", root, "-o", w.bin, "./cmd/caddy-oauthconn").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v: %s", err, out)
	}
	// The upstream API: small answers, bodies read and dropped.
	api := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		rw.Header().Set("Content-Type", "application/json")
		io.WriteString(rw, `{"ok":true}`)
	})
	if w.upstream, err = listen(api); err != nil {
		return nil, err
	}
	if w.tlsUpstream, w.tlsCA, err = tlsUpstream(w.tmp, api, &w.upstreamProtos); err != nil {
		return nil, err
	}
	// A counting proxy in front of Vault.
	vu, _ := url.Parse(os.Getenv("VAULT_ADDR"))
	vp := httputil.NewSingleHostReverseProxy(vu)
	addr, err := listen(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.vaultCalls.Add(1)
		if strings.Contains(r.URL.Path, "/tokens/") || strings.HasSuffix(r.URL.Path, "/tokens") {
			w.connCalls.Add(1)
		}
		vp.ServeHTTP(rw, r)
	}))
	if err != nil {
		return nil, err
	}
	w.vaultURL = "http://" + addr
	if w.vault, err = vaultapi.NewClient(&vaultapi.Config{Address: os.Getenv("VAULT_ADDR")}); err != nil {
		return nil, err
	}
	w.vault.SetToken(os.Getenv("VAULT_TOKEN"))
	// A counter in front of Hydra's token endpoint.
	if w.tokens, err = hydradev.NewTokenCounter(w.hydra.PublicURL); err != nil {
		return nil, err
	}
	if addr, err = listen(w.tokens); err != nil {
		return nil, err
	}
	w.tokenURL = "http://" + addr
	w.publicPort = 21380
	if w.client, err = w.hydra.CreateClient(fmt.Sprintf("http://localhost:%d/oauth/callback", w.publicPort), "client_secret_basic"); err != nil {
		return nil, err
	}
	// Hydra's tokens live 6 s by default: the overhead runs outlast that,
	// and a refresh there would count as Vault traffic on the hot path.
	// The storm, replica and outage runs expire the token in Vault instead.
	if err = w.hydra.SetAccessTokenLifespan(w.client, time.Hour); err != nil {
		return nil, err
	}
	w.prefix = "bench-" + hydradev.RandomHex(6)
	return w, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func run(s settings, logw io.Writer) (*report, error) {
	w, err := setup(logw)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(w.tmp)
	r := &report{machine: machine(), settings: s}
	if waveOnly {
		return r, runWave(w, s, r, logw)
	}

	// 1 and 2: overhead and hot-path purity, on one process. The load
	// generator collects its garbage a quarter as often meanwhile, so
	// that its collections (which stall requests of both proxies alike,
	// but not evenly across rounds) leave the rounds more alike.
	r.pinned = w.pin.describe()
	gc := debug.SetGCPercent(400)
	if w.pin != nil {
		if err := w.pin.self(); err != nil {
			return nil, err
		}
		defer w.pin.release()
	}
	p, err := startProc(w, w.publicPort)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	// On a loaded machine a redirect of the consent flow can be sent
	// twice (Hydra then refuses the used verifier): authorize again.
	for try := 1; ; try++ {
		if err = connect(p); err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	c := newClient(s.concurrency * 2)
	big := make([]byte, 64<<10)
	oauthGet, staticGet := p.url("/demo/items"), fmt.Sprintf("http://localhost:%d/demo/items", p.port+1)
	do(c, "GET", oauthGet, nil) // warm the cache and connections
	tlsBase := func(port int, proto string) string { return fmt.Sprintf("http://localhost:%d/%s/items", port, proto) }
	rows := []*overheadRow{
		{name: "GET, small response", method: "GET", oauthURL: oauthGet, staticURL: staticGet},
		{name: "POST, 64 KiB body", method: "POST", body: big, oauthURL: oauthGet, staticURL: staticGet},
		{name: "POST, 64 KiB body, replay_limit off", method: "POST", body: big, oauthURL: p.url("/noreplay/items"), staticURL: staticGet},
		{name: "GET, TLS upstream, HTTP/1.1", method: "GET", oauthURL: tlsBase(p.port+2, "h1"), staticURL: tlsBase(p.port+3, "h1")},
		{name: "POST 64 KiB, TLS upstream, HTTP/1.1", method: "POST", body: big, oauthURL: tlsBase(p.port+2, "h1"), staticURL: tlsBase(p.port+3, "h1")},
		{name: "GET, TLS upstream, default versions", method: "GET", oauthURL: tlsBase(p.port+2, "h2"), staticURL: tlsBase(p.port+3, "h2")},
		{name: "POST 64 KiB, TLS upstream, default versions", method: "POST", body: big, oauthURL: tlsBase(p.port+2, "h2"), staticURL: tlsBase(p.port+3, "h2")},
	}
	if sameProxy {
		for _, row := range rows {
			row.oauthURL = row.staticURL
		}
	}
	for _, row := range rows[2:] {
		do(c, "GET", row.oauthURL, nil) // warm the upstream connections
		do(c, "GET", row.staticURL, nil)
	}
	var oauthRequests int
	var vaultDuring, connDuring int64
	var hotStart time.Time
	for round := range s.rounds {
		fmt.Fprintf(logw, "overhead round %d\n", round+1)
		for i, row := range rows {
			v0, c0, t0 := w.vaultCalls.Load(), w.connCalls.Load(), time.Now()
			if hotStart.IsZero() {
				hotStart = t0
			}
			h1, h2 := w.upstreamProtos[1].Load(), w.upstreamProtos[2].Load()
			var run pairRun
			profile(fmt.Sprintf("pair-%d-%s-round%d", i, row.method, round+1), 2*s.duration, func() {
				// Each side has the first slot in every other round.
				run = loadPair(c, row.method, row.oauthURL, row.staticURL, row.body, s.concurrency, 2*s.duration, round%2 == 0,
					func() time.Duration { return processCPU(p.pid()) })
			})
			row.oauthCPU += run.cpuA
			row.staticCPU += run.cpuB
			row.http1 += w.upstreamProtos[1].Load() - h1
			row.http2 += w.upstreamProtos[2].Load() - h2
			vaultDuring += w.vaultCalls.Load() - v0
			connDuring += w.connCalls.Load() - c0
			r.hotTime += run.a.elapsed
			r.hotSpan = time.Since(hotStart)
			oauthRequests += run.a.requests
			row.oauth = merge(row.oauth, run.a)
			row.static = merge(row.static, run.b)
			row.rounds = append(row.rounds, run.a.throughput()/run.b.throughput())
			row.p99s = append(row.p99s, run.a.percentile(0.99)-run.b.percentile(0.99))
		}
	}
	for _, row := range rows {
		r.overhead = append(r.overhead, *row)
	}
	r.vaultPer10k = float64(connDuring) / float64(oauthRequests) * 10000
	r.hotVault, r.hotOther = connDuring, vaultDuring-connDuring
	p.stop()
	debug.SetGCPercent(gc)
	if w.pin != nil {
		if err := w.pin.release(); err != nil {
			return nil, err
		}
	}
	if overheadOnly {
		return r, nil
	}

	// 3: a storm on an expired token, on a process with a cold cache.
	if err := expireInVault(w); err != nil {
		return nil, err
	}
	p, err = startProc(w, w.publicPort+10)
	if err != nil {
		return nil, err
	}
	before, vaultBefore := w.tokens.Count("refresh_token"), w.connCalls.Load()
	fmt.Fprintf(logw, "storm of %d\n", s.storm)
	r.storm = burst(newClient(s.storm), []string{p.url("/demo/items")}, s.storm)
	r.stormRefreshes, r.stormFailures = w.tokens.Count("refresh_token")-before, r.storm.failures
	r.stormVault = w.connCalls.Load() - vaultBefore
	p.stop()

	// 7: the token endpoint down across the token's expiry, under steady
	// load: what the outage costs the provider and the store.
	fmt.Fprintln(logw, "token endpoint outage")
	if r.outage, err = tokenOutage(w, w.publicPort+60, s.outage); err != nil {
		return nil, err
	}

	// 6: startup to the first proxied 200, the token fresh in Vault.
	t0 := time.Now()
	p, err = startProc(w, w.publicPort+20)
	if err != nil {
		return nil, err
	}
	for !do(http.DefaultClient, "GET", p.url("/demo/items"), nil) {
		time.Sleep(2 * time.Millisecond)
	}
	r.startup = time.Since(t0)
	p.stop()

	// 4: three replicas sharing Vault, a storm on each after expiry.
	if err := expireInVault(w); err != nil {
		return nil, err
	}
	var urls []string
	for i := range 3 {
		rp, err := startProc(w, w.publicPort+30+10*i)
		if err != nil {
			return nil, err
		}
		defer rp.stop()
		urls = append(urls, rp.url("/demo/items"))
	}
	before = w.tokens.Count("refresh_token")
	fmt.Fprintln(logw, "replica storm")
	r.replicas = burst(newClient(s.storm), urls, s.storm)
	r.replicaRefreshes, r.replicaFailures = w.tokens.Count("refresh_token")-before, r.replicas.failures

	// 5: memory per cached connection.
	for _, n := range s.memory {
		fmt.Fprintf(logw, "memory with %d connections\n", n)
		r.memory = append(r.memory, memoryPerConnection(n))
	}

	// 9: a refresh wave over three replicas.
	return r, runWave(w, s, r, logw)
}

func merge(a, b result) result {
	return result{requests: a.requests + b.requests, failures: a.failures + b.failures,
		elapsed: a.elapsed + b.elapsed, latencies: append(a.latencies, b.latencies...)}
}

// expireInVault makes the stored access token look expired, as it is after
// an idle hour: the next request must refresh.
func expireInVault(w *world) error {
	p := "secret/data/" + w.prefix + "/tokens/demo"
	sec, err := w.vault.Logical().ReadWithContext(context.Background(), p)
	if err != nil || sec == nil {
		return fmt.Errorf("reading the token: %v", err)
	}
	data := sec.Data["data"].(map[string]any)
	data["expiry"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	data["obtained_at"] = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	_, err = w.vault.Logical().WriteWithContext(context.Background(), p, map[string]any{"data": data})
	return err
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s %s/%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func (r *report) markdown(out io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	p("Machine: %s. Load generator, upstream, Vault, Hydra and the proxy share it.", r.machine)
	p("Settings: %d rounds per measurement, in each of which the two proxies have %s in turns of %s, %d concurrent clients; storms of %d requests.",
		r.settings.rounds, r.settings.duration, pairSlot, r.settings.concurrency, r.settings.storm)
	p("Sections 1 and 2: %s.", r.pinned)
	if sameProxy {
		p("**A/A run: both sides of section 1 are reverse_proxy; its differences are the method's noise.**")
	}
	p("")
	r.summary(p)
	p("### 1. Overhead: oauthconn_proxy against reverse_proxy with a static Authorization header")
	p("")
	p("| request | proxy | req/s | p50 | p99 | failures |")
	p("| --- | --- | ---: | ---: | ---: | ---: |")
	for _, row := range r.overhead {
		for _, x := range []struct {
			n   string
			res result
		}{{"oauthconn_proxy", row.oauth}, {"reverse_proxy", row.static}} {
			p("| %s | %s | %.0f | %s | %s | %d |", row.name, x.n, x.res.throughput(), ms(x.res.percentile(0.5)), ms(x.res.percentile(0.99)), x.res.failures)
		}
	}
	p("")
	p("| request | throughput ratio (median of the rounds) | middle half of the rounds | ratio of the totals | added p50 | added p99 (median of the rounds) | added p99, all rounds together | proxy CPU per request (oauthconn_proxy / reverse_proxy) | oauthconn_proxy's upstream requests |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, row := range r.overhead {
		protos := "HTTP/1.1 (plain)"
		if row.http1+row.http2 > 0 {
			protos = fmt.Sprintf("TLS: %d over HTTP/1.1, %d over HTTP/2", row.http1, row.http2)
		}
		q1, q3 := quartiles(row.rounds)
		cpu := "not known"
		if oc, sc := row.cpuPerRequest(); sc > 0 {
			cpu = fmt.Sprintf("%s / %s (%+.1f%%)", us(oc), us(sc), (float64(oc)/float64(sc)-1)*100)
		}
		p("| %s | %.3f× | %.3f–%.3f | %.3f× | %s | %s | %s | %s | %s |", row.name, row.ratio(), q1, q3,
			row.oauth.throughput()/row.static.throughput(), ms(row.oauth.percentile(0.5)-row.static.percentile(0.5)),
			ms(row.addedP99()), ms(row.oauth.percentile(0.99)-row.static.percentile(0.99)), cpu, protos)
	}
	p("")
	p("### 2. Hot path: Vault requests on the connection's record per 10,000 proxied requests with a fresh token")
	p("")
	p("%.2f (counted at a proxy in front of Vault during the oauthconn_proxy runs above: %d requests on the connection's record in %.0f s of load on one connection;"+
		" a cached connection is read again once per revalidate_interval, 60 s, in the background, so that a disconnect on another replica is seen; the runs spanned %.0f s)."+
		" Besides those, %d other Vault requests: the sweep of expired authorization states, once a minute, on no request's path.",
		r.vaultPer10k, r.hotVault, r.hotTime.Seconds(), r.hotSpan.Seconds(), r.hotOther)
	p("")
	if overheadOnly {
		return
	}
	p("### 3. Refresh storm: %d concurrent requests on an expired token, one process", r.storm.requests)
	p("")
	p("Refresh grants at the token endpoint: %d. Failed requests: %d. Latency p50 %s, p99 %s, max %s.",
		r.stormRefreshes, r.stormFailures, ms(r.storm.percentile(0.5)), ms(r.storm.percentile(0.99)), ms(r.storm.percentile(1)))
	p("")
	p("### 4. Replicas: 3 processes sharing Vault, %d requests spread over them after expiry (Hydra, strict rotation)", r.replicas.requests)
	p("")
	p("Refresh grants: %d. Failed requests: %d. Latency p50 %s, p99 %s, max %s.",
		r.replicaRefreshes, r.replicaFailures, ms(r.replicas.percentile(0.5)), ms(r.replicas.percentile(0.99)), ms(r.replicas.percentile(1)))
	p("")
	memoryMarkdown(out, r.memory)
	p("")
	p("### 6. Startup to the first proxied 200, token already in Vault")
	p("")
	p("%s (process start, config load, Vault read, upstream round trip).", ms(r.startup))
	p("")
	p("### 7. Vault requests per refresh")
	p("")
	p("%.1f (the storm of section 3 on a cold process: %d Vault requests on the token record for %d refresh; read, take the lease, write).",
		float64(r.stormVault)/float64(max(r.stormRefreshes, 1)), r.stormVault, r.stormRefreshes)
	p("")
	p("### 8. A token endpoint outage of %s across the access token's expiry, %d requests/s", r.outage.duration, outageRate)
	p("")
	p("| requests | answered 200 | answered 503 with Retry-After | other | token requests during the outage | Vault requests on the token record during the outage | refresh grants after it |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	o := r.outage
	p("| %d | %d | %d | %d | %d | %d | %d |", o.requests, o.ok, o.unavailable, o.other, o.tokenRequests, o.vaultRequests, o.recoveryRefreshes)
	p("")
	p("Without backoff every waiting request would reach the token endpoint; with it the connection tries at 1, 2, 4, 8, … s (jittered, capped at 60 s).")
	if r.wave != nil {
		p("")
		r.wave.markdown(p)
	}
}
