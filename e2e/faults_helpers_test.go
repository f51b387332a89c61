package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// The fault tests put fault proxies between the proxy under test and its
// real dependencies:
//
//	proxy ──► tok (HTTP faults) ──► Hydra's token endpoint
//	proxy ──► vtcp (TCP faults) ──► vhttp (HTTP faults) ──► Vault
//
// and read what Vault holds and what the token endpoint saw directly. They
// assert counts and outcomes; the only time limits are the contract's
// bounds on how long a request may wait.

// Contract values the fault tests configure.
const (
	maxWait = 3 * time.Second
	// waitSlack is what a request may take beyond max_wait: the round
	// trip and the answer.
	waitSlack = 2 * time.Second
)

// faultWorld is one fault test's Hydra client, upstream API and fault
// proxies, with a Vault prefix of its own.
type faultWorld struct {
	h      *hydra
	up     *upstream
	c      hydradev.Client
	tok    *faultproxy.HTTP // in front of Hydra's public URL
	vtcp   *faultproxy.TCP  // in front of vhttp: what the proxy calls Vault
	vhttp  *faultproxy.HTTP // in front of Vault
	vault  *vaultapi.Client // Vault itself, for the test's own reads
	prefix string
}

// newFaultWorld registers a Hydra client for redirectURI whose access tokens
// live accessTTL (zero: Hydra's default, 6 s under scripts/test) and starts
// the fault proxies, all passing for now.
func newFaultWorld(t *testing.T, redirectURI string, accessTTL time.Duration) *faultWorld {
	t.Helper()
	w := &faultWorld{h: newHydra(t), prefix: "e2e-faults-" + hydradev.RandomHex(6)}
	w.up = newUpstream(t, w.h)
	w.c = w.h.createClient(t, redirectURI, "client_secret_basic")
	if accessTTL > 0 {
		if err := w.h.SetAccessTokenLifespan(w.c, accessTTL); err != nil {
			t.Fatal(err)
		}
	}
	w.tok = faultproxy.NewHTTP(t, w.h.PublicURL, faultproxy.GrantType)
	env := testservices.Vault(t)
	w.vhttp = faultproxy.NewHTTP(t, env.Addr, faultproxy.VaultKind)
	w.vtcp = faultproxy.NewTCP(t, strings.TrimPrefix(w.vhttp.URL, "http://"))
	vc, err := vaultapi.NewClient(&vaultapi.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(env.Token)
	w.vault = vc
	return w
}

// stored reads the connection's token record from Vault (nil if none).
func (w *faultWorld) stored(t *testing.T) map[string]any {
	t.Helper()
	sec, err := w.vault.Logical().Read("secret/data/" + w.prefix + "/tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	if sec == nil {
		return nil
	}
	d, _ := sec.Data["data"].(map[string]any)
	return d
}

func (w *faultWorld) storedRT(t *testing.T) string {
	t.Helper()
	rt, _ := w.stored(t)["refresh_token"].(string)
	return rt
}

func (w *faultWorld) storedExpiry(t *testing.T) time.Time {
	t.Helper()
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(w.stored(t)["expiry"]))
	if err != nil {
		t.Fatalf("stored expiry: %v", err)
	}
	return exp
}

// tokenReport says what the token endpoint saw, never a token.
func (w *faultWorld) tokenReport() string {
	return fmt.Sprintf("token endpoint: %d refresh requests (%d succeeded, %d faulted), %d authorization codes, %d refresh tokens redeemed twice, %d concurrent redemptions",
		w.tok.Count("refresh_token"), w.tok.Succeeded("refresh_token"), w.tok.Faulted("refresh_token"),
		w.tok.Count("authorization_code"), w.tok.RedeemedTwice(), w.tok.ConcurrentRedemptions())
}

// checkRotation asserts what every fault test promises about the refresh
// token chain: nothing redeemed twice or concurrently, no new
// authorization, and (waiting a little for a background write) Vault holds
// the last refresh token the provider issued.
func (w *faultWorld) checkRotation(t *testing.T, authorizations int) {
	t.Helper()
	if w.tok.RedeemedTwice() != 0 || w.tok.ConcurrentRedemptions() != 0 {
		t.Errorf("a refresh token was redeemed twice or concurrently; %s", w.tokenReport())
	}
	if got := w.tok.Count("authorization_code"); got != authorizations {
		t.Errorf("authorization codes redeemed = %d, want %d: somebody had to authorize again", got, authorizations)
	}
	if last := w.tok.LastIssued(); last != "" {
		ok := waitUntil(10*time.Second, func() bool { return w.storedRT(t) == last })
		if !ok {
			holds := "an older one"
			if w.storedRT(t) == "" {
				holds = "none"
			}
			t.Errorf("Vault does not hold the last refresh token the provider issued (it holds %s); %s", holds, w.tokenReport())
		}
	}
}

// sidecarConfig is the test Caddyfile of the in-process Caddy.
type sidecarConfig struct {
	// secret overrides the client secret (to misconfigure it).
	secret string
	// connector holds extra options of connector demo, one per line.
	connector string
	// app holds extra options of the oauthconn app, one per line.
	app string
	// addresses are Vault addresses tried after the world's own.
	addresses string
}

const faultCaddyfile = `{
	admin localhost:2999
	oauthconn {
		public_url http://localhost:9080
		%[9]s
		store vault {
			address %[1]s %[10]s
			token {env.VAULT_TOKEN}
			mount secret
			prefix %[2]s
		}
		connector demo {
			authorization_url %[3]s/oauth2/auth
			token_url %[4]s/oauth2/token
			client_id %[5]s
			client_secret %[6]s
			auth_style basic
			scopes openid offline_access
			%[7]s
		}
	}
}

http://localhost:9080 {
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo %[8]s
	}
}
`

func (w *faultWorld) caddyfile(o sidecarConfig) string {
	secret := w.c.Secret
	if o.secret != "" {
		secret = o.secret
	}
	return fmt.Sprintf(faultCaddyfile, w.vtcp.URL(), w.prefix, w.h.PublicURL, w.tok.URL, w.c.ID, secret,
		strings.ReplaceAll(o.connector, "\n", "\n\t\t\t"), w.up.URL, strings.ReplaceAll(o.app, "\n", "\n\t\t"), o.addresses)
}

// startSidecar loads the Caddyfile into caddytest's in-process Caddy on
// localhost:9080 (admin 2999) and stops the test if it does not load.
func (w *faultWorld) startSidecar(t *testing.T, o sidecarConfig) *sidecar {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(w.caddyfile(o), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return &sidecar{base: "http://localhost:9080", prefix: w.prefix, vault: w.vault}
}

// reload posts a Caddyfile to the admin API as `caddy reload` does, forcing
// a reload even when it did not change.
func reload(t *testing.T, caddyfile string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://localhost:2999/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("reload: %d %s", resp.StatusCode, b)
	}
}

// Binary replicas.

const faultReplicaCaddyfile = `{
	admin localhost:{$ADMIN_PORT}
	oauthconn {
		public_url {$PUBLIC_URL}
		%[1]s
		connector demo {
			authorization_url {env.AS_AUTH_URL}
			token_url {env.AS_TOKEN_URL}
			client_id {env.AS_CLIENT_ID}
			client_secret {env.AS_CLIENT_SECRET}
			auth_style basic
			scopes openid offline_access
			%[2]s
		}
	}
}

http://localhost:{$PORT} {
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo {env.DEMO_UPSTREAM}
	}
}
`

// Ports of the fault tests' binaries (admin: +100), apart from
// TestReplicas' ones.
const (
	portA    = 9191
	portB    = 9192
	portKill = 9193
	portSoak = 9194
)

// vaultStore is the store block for the world's Vault, through the
// fault proxies.
func (w *faultWorld) vaultStore() string {
	return fmt.Sprintf("store vault {\n\t\t\taddress %s\n\t\t\ttoken {env.VAULT_TOKEN}\n\t\t\tprefix %s\n\t\t}", w.vtcp.URL(), w.prefix)
}

// replicaEnv is the environment of the world's replicas whose public URL
// (where the callback goes) is publicPort's.
func (w *faultWorld) replicaEnv(publicPort int) []string {
	return []string{
		fmt.Sprintf("PUBLIC_URL=http://localhost:%d", publicPort),
		"AS_AUTH_URL=" + w.h.PublicURL + "/oauth2/auth", "AS_TOKEN_URL=" + w.tok.URL + "/oauth2/token",
		"AS_CLIENT_ID=" + w.c.ID, "AS_CLIENT_SECRET=" + w.c.Secret, "DEMO_UPSTREAM=" + w.up.URL,
	}
}

// connectedReplicas starts two replicas of the binary, A and B, sharing the
// world's Vault store with the connector options opts, and connects the
// connection through A.
func (w *faultWorld) connectedReplicas(t *testing.T, opts string) (a, b *process) {
	t.Helper()
	env := w.replicaEnv(portA)
	a = startBinary(t, portA, w.vaultStore(), opts, env, "")
	b = startBinary(t, portB, w.vaultStore(), opts, env, "")
	connect(t, &sidecar{base: a.url()}, newBrowser())
	return a, b
}

// holdRefresh holds the next refresh request at the token endpoint, and
// sends requests to replica p until p's refresh of the connection (due
// once its 6 s token is) is held there.
func (w *faultWorld) holdRefresh(t *testing.T, p *process) {
	t.Helper()
	w.tok.Set(faultproxy.Fault{Match: faultproxy.Grant("refresh_token"), Hang: true, Times: 1})
	if !waitUntil(20*time.Second, func() bool {
		get(http.DefaultClient, p.url()+"/demo/items")
		time.Sleep(100 * time.Millisecond)
		return w.tok.InFlight("refresh_token") > 0
	}) {
		t.Fatalf("the replica started no refresh; %s", w.tokenReport())
	}
}

// releaseRefresh lets the held refresh reach the token endpoint, checks
// that it was answered with a new token set, and gives the replica that
// sent it the time to write (or discard) that set.
func (w *faultWorld) releaseRefresh(t *testing.T) {
	t.Helper()
	before := w.tok.LastIssued()
	w.tok.Release()
	if !waitUntil(20*time.Second, func() bool {
		return w.tok.InFlight("refresh_token") == 0 && w.tok.Succeeded("refresh_token") == 1
	}) {
		t.Fatalf("the held refresh did not complete; %s", w.tokenReport())
	}
	if w.tok.LastIssued() == before {
		t.Fatal("the held refresh was not answered with a new token set")
	}
	time.Sleep(waitSlack) // the write follows the answer at once
}

// disconnectVia disconnects the connection through p's connect routes.
func disconnectVia(t *testing.T, p *process) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, p.url()+"/oauth/connectors/demo", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %d", resp.StatusCode)
	}
}

// process is a replica started by startBinary.
type process struct {
	*replica
	exited chan struct{} // closed once the process has been reaped
}

// startBinary runs the built binary with a Caddyfile of
// faultReplicaCaddyfile's shape on port (admin port+100), its data in dir
// (a new temporary directory if empty), and stops it when t ends. Its
// output is shown if t fails.
func startBinary(t *testing.T, port int, store, connector string, env []string, dir string) *process {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cf := filepath.Join(dir, "Caddyfile")
	body := fmt.Sprintf(faultReplicaCaddyfile, store, strings.ReplaceAll(connector, "\n", "\n\t\t\t"))
	if err := os.WriteFile(cf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &process{replica: &replica{port: port, out: &lockedBuffer{}}, exited: make(chan struct{})}
	b.cmd = exec.Command(buildBinary(t), "run", "--config", cf)
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Env = append(b.cmd.Env, fmt.Sprintf("PORT=%d", port), fmt.Sprintf("ADMIN_PORT=%d", port+100),
		"XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("replica on %d said (last lines):\n%s", port, tail(b.out.String(), 25))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-b.exited:
			t.Fatalf("replica on %d exited:\n%s", port, tail(b.out.String(), 25))
		default:
		}
		resp, err := http.Get(b.url() + "/oauth/connectors")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica on %d did not start:\n%s", port, tail(b.out.String(), 25))
		}
	}
}

// stop interrupts the process, as an orchestrator does, and kills it if
// it has not ended after 10 s.
func (b *process) stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.kill()
	}
}

// kill ends the process with SIGKILL: no cleanup, no lease given back.
func (b *process) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Load.

// outcome is what an app saw of one request.
type outcome struct {
	url        string
	sent       time.Time
	took       time.Duration
	status     int    // 0: no answer
	code       string // the JSON body's "error"
	retryAfter string
	err        error
}

func (o outcome) String() string {
	if o.status == 0 {
		return fmt.Sprintf("%s at %s: %v after %v", o.url, o.sent.Format("15:04:05.000"), o.err, o.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s at %s: %d %s (Retry-After %q) after %v", o.url, o.sent.Format("15:04:05.000"), o.status, o.code,
		o.retryAfter, o.took.Round(time.Millisecond))
}

// kind is the outcome's class for summaries: "200", "503 token_unavailable",
// "error".
func (o outcome) kind() string {
	switch {
	case o.status == 0:
		return "no answer"
	case o.code != "":
		return strconv.Itoa(o.status) + " " + o.code
	}
	return strconv.Itoa(o.status)
}

// load sends GETs at a steady rate, round robin over its URLs, each in its
// own goroutine, until stopped or for at most its limit.
type load struct {
	stop chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	out  []outcome
	once sync.Once
}

// startLoad sends rate requests per second to urls for at most limit.
func startLoad(t *testing.T, rate int, limit time.Duration, urls ...string) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		end := time.After(limit)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-end:
				return
			case <-tick.C:
			}
			u := urls[i%len(urls)]
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				o := get(client, u)
				l.mu.Lock()
				l.out = append(l.out, o)
				l.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { l.Stop() })
	return l
}

func get(c *http.Client, u string) outcome {
	o := outcome{url: u, sent: time.Now()}
	resp, err := c.Get(u)
	if err != nil {
		o.took, o.err = time.Since(o.sent), err
		return o
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.took, o.status, o.retryAfter = time.Since(o.sent), resp.StatusCode, resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &e)
		o.code = e.Error
	}
	return o
}

// Stop ends the load, waits for the requests in flight, and returns every
// outcome in the order sent.
func (l *load) Stop() []outcome {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	l.wg.Wait()
	return l.Snapshot()
}

// Snapshot returns the outcomes so far in the order sent.
func (l *load) Snapshot() []outcome {
	l.mu.Lock()
	out := append([]outcome(nil), l.out...)
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].sent.Before(out[j].sent) })
	return out
}

// okAfter reports whether a request sent after since was answered 200 by
// every one of urls (any, if none given).
func (l *load) okAfter(since time.Time, urls ...string) bool {
	seen := map[string]bool{}
	for _, o := range l.Snapshot() {
		if o.sent.After(since) && o.status == http.StatusOK {
			seen[o.url] = true
		}
	}
	if len(urls) == 0 {
		return len(seen) > 0
	}
	for _, u := range urls {
		if !seen[u] {
			return false
		}
	}
	return true
}

// summary counts outcomes by kind, for failure messages.
func summary(outs []outcome) string {
	n := map[string]int{}
	for _, o := range outs {
		n[o.kind()]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %d; ", k, n[k])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// failing returns the outcomes that bad reports, with at most a few of them
// spelled out for the failure message.
func failing(outs []outcome, bad func(outcome) bool) (n int, examples string) {
	var ex []string
	for _, o := range outs {
		if bad(o) {
			n++
			if len(ex) < 5 {
				ex = append(ex, o.String())
			}
		}
	}
	return n, strings.Join(ex, "\n\t")
}

// checkNoReauthorization fails t if any app was told to authorize again.
func checkNoReauthorization(t *testing.T, outs []outcome) {
	t.Helper()
	if n, ex := failing(outs, func(o outcome) bool { return o.code == "authorization_required" }); n > 0 {
		t.Errorf("%d requests were told to authorize again (%s), e.g.\n\t%s", n, summary(outs), ex)
	}
}

// checkWaits fails t if a request waited longer than max_wait allows.
func checkWaits(t *testing.T, outs []outcome) {
	t.Helper()
	if n, ex := failing(outs, func(o outcome) bool { return o.took > maxWait+waitSlack }); n > 0 {
		t.Errorf("%d requests waited longer than max_wait %v + %v, e.g.\n\t%s", n, maxWait, waitSlack, ex)
	}
}

// checkUnavailable fails t unless every answer but 200 is a 503 with the
// given error code and a Retry-After of at least one second.
func checkUnavailable(t *testing.T, outs []outcome, code string) {
	t.Helper()
	n, ex := failing(outs, func(o outcome) bool {
		if o.status == http.StatusOK {
			return false
		}
		secs, err := strconv.Atoi(o.retryAfter)
		return o.status != http.StatusServiceUnavailable || o.code != code || err != nil || secs < 1
	})
	if n > 0 {
		t.Errorf("%d answers were neither 200 nor 503 %s with Retry-After (%s), e.g.\n\t%s", n, code, summary(outs), ex)
	}
}

// waitUntil polls cond every 10 ms for at most d and reports whether it
// became true.
func waitUntil(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
