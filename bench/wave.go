package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/time/rate"

	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// The refresh wave: n per-user connections, each a real grant at Hydra,
// fall due within one minute while three replicas sharing Vault serve
// requests for all of them, the token endpoint answering after 100–300 ms.

// waveCaddyfile is a replica with a per-user connector (the subject is the
// X-User header) and the wave's bounds.
const waveCaddyfile = `{
	admin off
	log {
		level ERROR
	}
	oauthconn {
		public_url http://localhost:{$PUBLIC_PORT}
		store vault {
			address {env.BENCH_VAULT}
			prefix {env.BENCH_PREFIX}
		}
		connector wave {
			authorization_url {env.AS_AUTH_URL}
			token_url {env.AS_TOKEN_URL}
			client_id {env.AS_CLIENT_ID}
			client_secret {env.AS_CLIENT_SECRET}
			auth_style basic
			scopes openid offline_access
			subject {http.request.header.X-User}
			refresh_margin {$WAVE_MARGIN}
			max_concurrent_refreshes {$WAVE_CONCURRENCY}
			max_waiting {$WAVE_WAITING}
		}
	}
}

http://localhost:{$PORT} {
	handle_path /wave/* {
		oauthconn_proxy wave http://{$UPSTREAM}
	}
}
`

// Wave parameters: the refresh margin (connections fall due over the first
// minute and expire a margin later), the per-replica bounds, and the token
// endpoint's latency.
const (
	waveMargin      = 5 * time.Minute
	waveConcurrency = 16
	waveWaiting     = 1000
	tokenDelayMin   = 100 * time.Millisecond
	tokenDelayMax   = 300 * time.Millisecond
	waveReplicas    = 3
	waveClients     = 48
	seedWorkers     = 1 // Hydra on SQLite stalls authorization flows run in parallel
)

// waveSpread is how long n connections take to fall due: a minute, less
// for the few of a smoke run.
func waveSpread(n int) time.Duration { return min(time.Minute, time.Duration(n)*100*time.Millisecond) }

// waveResult is what a wave cost.
type waveResult struct {
	n                         int
	seeding                   time.Duration
	duration                  time.Duration // first token request to the n-th refresh
	refreshes, refused        int
	unrefreshed, late, lost   int
	requests, ok, shed, other int
	firstOther                string
	maxTokenFlight            int64
	maxVaultFlight            int64
	vaultWave, vaultWarm      int // audit log entries on the token records
	vaultReads, vaultWrites   int
	rss                       []int64 // peak resident bytes per replica
	tokenRequests             int64
	auditOK                   bool
	warmup                    time.Duration
	warmFailures              int
	warmOverrun               time.Duration // past 5 s before the first connection falls due
	rate                      int
	errors                    []string // token endpoint errors, by status and code
}

// flight counts requests in flight and the most at once.
type flight struct{ now, most atomic.Int64 }

func (f *flight) enter() {
	n := f.now.Add(1)
	for {
		m := f.most.Load()
		if n <= m || f.most.CompareAndSwap(m, n) {
			return
		}
	}
}
func (f *flight) leave() { f.now.Add(-1) }

// refreshWave seeds n connections, runs the wave and checks every record.
func refreshWave(w *world, n int, logw io.Writer) (waveResult, error) {
	r := waveResult{n: n}
	fmt.Fprintf(logw, "wave: %d authorization code grants at Hydra\n", n)
	t0 := time.Now()
	grants, err := seedGrants(w, n)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(logw, "wave: %d grants in %.0f s\n", n, time.Since(t0).Seconds())

	// The token endpoint, 100–300 ms away, counted; and Vault, counted.
	var tokenFlight, vaultFlight flight
	var refused, refreshed atomic.Int64
	var firstRefresh atomic.Int64
	tu, _ := url.Parse(w.tokenURL)
	tp := httputil.NewSingleHostReverseProxy(tu)
	var refusals sync.Map // error code → count
	tp.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode == http.StatusOK {
			refreshed.Add(1)
			return nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &e)
		if e.Error == "invalid_grant" {
			refused.Add(1)
		}
		key := fmt.Sprint(resp.StatusCode, " ", e.Error)
		v, _ := refusals.LoadOrStore(key, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		return nil
	}
	tokenAddr, err := listen(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		tokenFlight.enter()
		defer tokenFlight.leave()
		firstRefresh.CompareAndSwap(0, time.Now().UnixNano())
		time.Sleep(tokenDelayMin + rand.N(tokenDelayMax-tokenDelayMin))
		tp.ServeHTTP(rw, req)
	}))
	if err != nil {
		return r, err
	}
	vu, _ := url.Parse(os.Getenv("VAULT_ADDR"))
	vp := httputil.NewSingleHostReverseProxy(vu)
	vaultAddr, err := listen(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		vaultFlight.enter()
		defer vaultFlight.leave()
		vp.ServeHTTP(rw, req)
	}))
	if err != nil {
		return r, err
	}

	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for i := range waveReplicas {
		p, err := startWaveProc(w, w.publicPort+100+10*i, "http://"+tokenAddr, "http://"+vaultAddr)
		if err != nil {
			return r, err
		}
		procs = append(procs, p)
	}

	// The records: due from start over the spread, expiring a margin
	// later, obtained (for the margin's cap) an hour before.
	// On this machine a record takes about 5 ms to save and 12 ms to
	// warm on three replicas.
	start := time.Now().Add(30*time.Second + time.Duration(n)*20*time.Millisecond)
	expiry := make([]time.Time, n)
	if err := saveGrants(w, grants, start, expiry); err != nil {
		return r, err
	}
	r.seeding = time.Since(t0)
	audit := filepath.Join(w.tmp, "vault-audit.log")
	r.auditOK = enableAudit(w, audit) == nil
	defer disableAudit(w)

	// The warm-up: every connection once on every replica (each reads
	// the record into its cache), then the load: every connection in
	// turn, on a random replica, at waveRate, until every connection is
	// refreshed or the last one expires.
	fmt.Fprintf(logw, "wave: warming %d replicas' caches\n", waveReplicas)
	c := newClient(waveClients * waveReplicas)
	warm := time.Now()
	r.warmFailures = warmUp(c, procs, n)
	r.warmup = time.Since(warm)
	r.warmOverrun = time.Since(start.Add(-5 * time.Second))
	time.Sleep(-r.warmOverrun)
	tokenFlight.most.Store(0)
	vaultFlight.most.Store(0)
	fmt.Fprintf(logw, "wave: load on %d replicas\n", waveReplicas)
	lim := rate.NewLimiter(rate.Limit(max(200, n/10)), 1)
	refresh0 := w.tokens.Count("refresh_token")
	refreshed.Store(0)
	tok0 := w.tokens.Total()
	deadline := start.Add(waveSpread(n) + waveMargin)
	var done atomic.Bool
	var next atomic.Int64
	var mu sync.Mutex
	perm := rand.Perm(n)
	var wg sync.WaitGroup
	var lastRefresh time.Time
	for range waveClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ok, shed, other, total int
			first := ""
			for !done.Load() {
				lim.Wait(context.Background())
				i := perm[int(next.Add(1))%n]
				p := procs[rand.N(len(procs))]
				status, code := waveGet(c, p.url("/wave/items"), fmt.Sprint("user-", i))
				total++
				switch {
				case status == http.StatusOK:
					ok++
				case status == http.StatusServiceUnavailable && code == "overloaded":
					shed++
				default:
					other++
					if first == "" {
						first = fmt.Sprintf("%d %s", status, code)
					}
				}
			}
			mu.Lock()
			r.requests += total
			r.ok += ok
			r.shed += shed
			r.other += other
			if r.firstOther == "" {
				r.firstOther = first
			}
			mu.Unlock()
		}()
	}
	for {
		time.Sleep(200 * time.Millisecond)
		// Every connection due (and a Hydra with short-lived tokens
		// may have refreshed some twice): as many refreshes as
		// connections.
		if refreshed.Load() >= int64(n) && time.Now().After(start.Add(waveSpread(n)+5*time.Second)) {
			lastRefresh = time.Now()
			time.Sleep(2 * time.Second)
			break
		}
		if time.Now().After(deadline) {
			lastRefresh = time.Now()
			break
		}
	}
	done.Store(true)
	wg.Wait()
	r.refreshes = w.tokens.Count("refresh_token") - refresh0
	r.tokenRequests = w.tokens.Total() - tok0
	r.refused = int(refused.Load())
	refusals.Range(func(k, v any) bool {
		r.errors = append(r.errors, fmt.Sprintf("%s × %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	if f := firstRefresh.Load(); f != 0 {
		r.duration = lastRefresh.Sub(time.Unix(0, f))
	}
	r.rate = max(200, n/10)
	r.maxTokenFlight, r.maxVaultFlight = tokenFlight.most.Load(), vaultFlight.most.Load()
	for _, p := range procs {
		r.rss = append(r.rss, peakRSS(p))
	}
	disableAudit(w)
	if r.auditOK {
		if err := countAudit(audit, w.prefix+"/tokens/wave/", start, &r); err != nil {
			return r, err
		}
	}

	// Every record: refreshed before its old expiry, still active.
	if err := checkWave(w, n, expiry, &r); err != nil {
		return r, err
	}
	return r, nil
}

// warmUp sends one request for every connection to every replica and
// returns how many failed.
func warmUp(c *http.Client, procs []*proc, n int) int {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range waveClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= n*len(procs) {
					return
				}
				if status, _ := waveGet(c, procs[k%len(procs)].url("/wave/items"), fmt.Sprint("user-", k/len(procs))); status != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// seedGrants runs n authorization code grants at Hydra in parallel, as a
// browser would (Hydra's login and consent app accepts every challenge).
func seedGrants(w *world, n int) ([]*oauth2.Token, error) {
	cfg := oauth2.Config{
		ClientID: w.client.ID, ClientSecret: w.client.Secret,
		Endpoint: oauth2.Endpoint{AuthURL: w.hydra.PublicURL + "/oauth2/auth", TokenURL: w.hydra.PublicURL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL: fmt.Sprintf("http://localhost:%d/oauth/callback", w.publicPort),
		Scopes:      []string{"openid", "offline_access"},
	}
	out := make([]*oauth2.Token, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range seedWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t, err := grant(cfg)
				for try := 0; err != nil && try < 5; try++ {
					// A busy Hydra can answer server_error; a new
					// grant is made, never a code redeemed twice.
					time.Sleep(100 * time.Millisecond)
					t, err = grant(cfg)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("grant %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				out[i] = t
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func grant(cfg oauth2.Config) (*oauth2.Token, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), cfg.RedirectURL) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := oauth2.GenerateVerifier()
	resp, err := hc.Get(cfg.AuthCodeURL("wave-state-"+strconv.Itoa(rand.N(1<<30)), oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return nil, fmt.Errorf("no code: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cfg.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
}

// saveGrants stores the grants as the connections of user-0 … user-n-1,
// through the Keeper (the records a connect writes), with the wave's
// expiries.
func saveGrants(w *world, grants []*oauth2.Token, start time.Time, expiry []time.Time) error {
	st, err := vault.New(vault.Config{Address: os.Getenv("VAULT_ADDR"), Token: os.Getenv("VAULT_TOKEN"), Prefix: w.prefix})
	if err != nil {
		return err
	}
	hourAgo := func() time.Time { return time.Now().Add(-time.Hour) }
	k := tokens.NewKeeper(tokens.Options{Store: st, Now: hourAgo})
	var next atomic.Int64
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(grants) {
					return
				}
				t := *grants[i]
				expiry[i] = start.Add(waveMargin + time.Duration(i)*waveSpread(len(grants))/time.Duration(len(grants)))
				t.Expiry = expiry[i]
				if _, err := k.Save(context.Background(), tokens.Key{Connector: "wave", Subject: fmt.Sprint("user-", i)}, &t, "bench"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func startWaveProc(w *world, port int, tokenURL, vaultURL string) (*proc, error) {
	// Any answer on /wave/items: it listens.
	return launch(w, "wave-", waveCaddyfile, port, "/wave/items", func(int) bool { return true },
		"BENCH_VAULT="+vaultURL, "AS_TOKEN_URL="+tokenURL+"/oauth2/token",
		"WAVE_MARGIN="+waveMargin.String(), fmt.Sprint("WAVE_CONCURRENCY=", waveConcurrency), fmt.Sprint("WAVE_WAITING=", waveWaiting))
}

// waveGet sends one request as user and returns the status and, for an
// error, its code.
func waveGet(c *http.Client, u, user string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("X-User", user)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, ""
	}
	var body struct {
		Error string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error
}

// peakRSS is the process's peak resident set (VmHWM).
func peakRSS(p *proc) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// enableAudit turns on a file audit device of Vault: every request, with
// its path, is logged (values HMAC'd).
func enableAudit(w *world, path string) error {
	_, err := w.vault.Logical().Write("sys/audit/oauthconn-wave", map[string]any{
		"type": "file", "options": map[string]any{"file_path": path},
	})
	return err
}

func disableAudit(w *world) { w.vault.Logical().Delete("sys/audit/oauthconn-wave") }

// countAudit counts the audit log's requests on the wave's token records:
// before start (the warm-up: cold caches reading each record) and from
// start on (the wave), reads and writes.
func countAudit(path, recordPath string, start time.Time, r *waveResult) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e struct {
			Type    string    `json:"type"`
			Time    time.Time `json:"time"`
			Request struct {
				Path      string `json:"path"`
				Operation string `json:"operation"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Type != "request" || !strings.Contains(e.Request.Path, recordPath) {
			continue
		}
		if e.Time.Before(start) {
			r.vaultWarm++
			continue
		}
		r.vaultWave++
		if e.Request.Operation == "read" {
			r.vaultReads++
		} else {
			r.vaultWrites++
		}
	}
	return sc.Err()
}

// checkWave reads every record: refreshed (obtained after seeding) before
// its old expiry, and still an active connection.
func checkWave(w *world, n int, expiry []time.Time, r *waveResult) error {
	var errOnce error
	for i := range n {
		p := "secret/data/" + w.prefix + "/tokens/wave/user-" + strconv.Itoa(i)
		sec, err := w.vault.Logical().ReadWithContext(context.Background(), p)
		if err != nil || sec == nil {
			if errOnce == nil {
				errOnce = fmt.Errorf("reading %s: %v", p, err)
			}
			r.lost++
			continue
		}
		data, _ := sec.Data["data"].(map[string]any)
		if s, _ := data["state"].(string); s != "" || data["access_token"] == nil {
			r.lost++
			continue
		}
		obtained, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(data["obtained_at"]))
		switch {
		case obtained.Before(expiry[i].Add(-waveMargin - time.Minute)):
			r.unrefreshed++
		case !obtained.Before(expiry[i]):
			r.late++
		}
	}
	if r.lost == n && errOnce != nil {
		return errOnce
	}
	return nil
}

func (r waveResult) markdown(p func(string, ...any)) {
	p("### 9. Refresh wave: %d per-user connections falling due within %s, %d replicas sharing Vault", r.n, waveSpread(r.n), waveReplicas)
	p("")
	p("Token endpoint: Hydra behind %s–%s of added latency, strict refresh-token rotation. Per replica: max_concurrent_refreshes %d, max_waiting %d, refresh_margin %s. After a warm-up (every connection once on every replica: %s, %d failed), %d clients send %d requests/s, for every connection in turn, each to a random replica, until all are refreshed.",
		tokenDelayMin, tokenDelayMax, waveConcurrency, waveWaiting, waveMargin, r.warmup.Round(time.Second), r.warmFailures, waveClients, r.rate)
	p("")
	p("| connections | refreshed | refreshed before expiry | lost | refresh grants | refused by Hydra (double redemption) | wave duration | requests | 200 | 503 overloaded | other |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	p("| %d | %d | %d | %d | %d | %d | %.1f s | %d | %d | %d | %d |", r.n, r.n-r.unrefreshed-r.lost, r.n-r.unrefreshed-r.late-r.lost, r.lost, r.refreshes, r.refused,
		r.duration.Seconds(), r.requests, r.ok, r.shed, r.other)
	p("")
	if r.warmOverrun > 0 {
		p("The warm-up ended %.0f s after the first connections fell due.", r.warmOverrun.Seconds()+5)
		p("")
	}
	if len(r.errors) > 0 {
		p("Token endpoint errors: %s.", strings.Join(r.errors, ", "))
		p("")
	}
	if r.firstOther != "" {
		p("First other answer: %s.", r.firstOther)
		p("")
	}
	ok := r.n - r.unrefreshed - r.late - r.lost
	perRefresh := float64(r.vaultWave) / float64(max(ok, 1))
	p("| Vault requests on the token records (audit log), wave | per connection refreshed | reads | writes | Vault requests/s | warm-up reads (cold caches) | most token requests in flight | most Vault requests in flight | peak RSS per replica |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	p("| %d | %.2f | %d | %d | %.0f | %d | %d | %d | %s |", r.vaultWave, perRefresh, r.vaultReads, r.vaultWrites,
		float64(r.vaultWave)/max(r.duration.Seconds(), 1), r.vaultWarm, r.maxTokenFlight, r.maxVaultFlight, r.rssList())
	p("")
	p("Seeding (%d authorization code grants at Hydra and their records) took %.0f s.", r.n, r.seeding.Seconds())
}

// rssList is the replicas' peak resident memory, in MiB.
func (r waveResult) rssList() string {
	rss := make([]string, len(r.rss))
	for i, b := range r.rss {
		rss[i] = fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
	return strings.Join(rss, ", ")
}

// waveOnly runs the wave and nothing else (-wave-only).
var waveOnly bool

// runWave runs section 9 when the settings ask for it.
func runWave(w *world, s settings, r *report, logw io.Writer) error {
	if s.wave <= 0 {
		return nil
	}
	res, err := refreshWave(w, s.wave, logw)
	if err != nil {
		return fmt.Errorf("refresh wave: %w", err)
	}
	r.wave = &res
	return nil
}

// failed describes what the wave got wrong, or is empty: every connection
// refreshed before its expiry, none lost, no refresh token redeemed twice,
// no request failed.
func (r waveResult) failed() string {
	if r.unrefreshed+r.late+r.lost+r.refused+r.other+r.warmFailures == 0 {
		return ""
	}
	return fmt.Sprintf("%d not refreshed, %d refreshed after expiry, %d lost, %d refresh tokens refused, %d failed requests (first: %s), %d failed warm-up requests",
		r.unrefreshed, r.late, r.lost, r.refused, r.other, r.firstOther, r.warmFailures)
}

// waveFailure describes a wave that was not run or went wrong.
func waveFailure(r *waveResult) string {
	if r == nil {
		return "not run"
	}
	return r.failed()
}
