package faultproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a target server that counts its requests and answers 200
// with the request path.
type backend struct {
	*httptest.Server
	calls atomic.Int64
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.calls.Add(1)
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(b.Close)
	return b
}

func get(c *http.Client, u string) (int, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestTCPModes(t *testing.T) {
	b := newBackend(t)
	p := NewTCP(t, strings.TrimPrefix(b.URL, "http://"))
	c := &http.Client{Timeout: 5 * time.Second}

	if code, err := get(c, p.URL()+"/a"); err != nil || code != 200 {
		t.Fatalf("pass: %d %v", code, err)
	}

	t.Run("refuse cuts pooled connections and resets new ones", func(t *testing.T) {
		p.SetMode(Refuse)
		start := time.Now()
		for range 3 {
			if _, err := get(c, p.URL()+"/b"); err == nil {
				t.Fatal("a request got through while refusing")
			}
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("refused requests did not fail at once")
		}
		if s := p.Stats(); s.Refused < 3 {
			t.Fatalf("stats %+v", s)
		}
		p.SetMode(Pass)
		if code, err := get(c, p.URL()+"/c"); err != nil || code != 200 {
			t.Fatalf("after refuse: %d %v", code, err)
		}
	})

	t.Run("black hole holds until the mode changes", func(t *testing.T) {
		calls := b.calls.Load()
		p.SetMode(BlackHole)
		short := &http.Client{Timeout: 300 * time.Millisecond}
		if _, err := get(short, p.URL()+"/d"); err == nil {
			t.Fatal("a request was answered in the black hole")
		}
		done := make(chan error, 1)
		go func() {
			_, err := get(c, p.URL()+"/e")
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("answered in the black hole: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		if s := p.Stats(); s.Held < 2 || s.Dropped < 2 {
			t.Fatalf("stats %+v", s)
		}
		p.SetMode(Pass)
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a held request was answered after the black hole")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("leaving the black hole did not close the held connection")
		}
		if b.calls.Load() != calls {
			t.Fatal("the target saw a black-holed request")
		}
		if code, err := get(c, p.URL()+"/f"); err != nil || code != 200 {
			t.Fatalf("after black hole: %d %v", code, err)
		}
	})

	t.Run("latency", func(t *testing.T) {
		p.SetLatency(200 * time.Millisecond)
		defer p.SetLatency(0)
		start := time.Now()
		if code, err := get(c, p.URL()+"/g"); err != nil || code != 200 {
			t.Fatalf("%d %v", code, err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Fatalf("took %v with 200ms latency", d)
		}
	})
}

func TestHTTPStatusForMatchingRequests(t *testing.T) {
	b := newBackend(t)
	p := NewHTTP(t, b.URL, VaultKind)
	p.Set(Fault{Match: KVWrite("secret", "pre/tokens/"), Status: 503, RetryAfter: "7"})
	c := &http.Client{Timeout: 5 * time.Second}

	req, _ := http.NewRequest(http.MethodPut, p.URL+"/v1/secret/data/pre/tokens/demo", strings.NewReader(`{"data":{}}`))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || string(body) != DefaultBody {
		t.Fatalf("token write: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	req, _ = http.NewRequest(http.MethodPut, p.URL+"/v1/secret/data/pre/leases/demo", strings.NewReader(`{}`))
	if resp, err = c.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("lease write: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, err := get(c, p.URL+"/v1/secret/data/pre/tokens/demo"); err != nil || code != 200 {
		t.Fatalf("read: %d %v", code, err)
	}
	if p.Count("write") != 2 || p.Faulted("write") != 1 || p.Count("read") != 1 || p.Succeeded("write") != 1 || b.calls.Load() != 2 {
		t.Fatalf("writes %d (faulted %d, ok %d), reads %d, target calls %d",
			p.Count("write"), p.Faulted("write"), p.Succeeded("write"), p.Count("read"), b.calls.Load())
	}
	p.Clear()
	req, _ = http.NewRequest(http.MethodPut, p.URL+"/v1/secret/data/pre/tokens/demo", strings.NewReader(`{}`))
	if resp, err = c.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after clear: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestHTTPTimes(t *testing.T) {
	b := newBackend(t)
	p := NewHTTP(t, b.URL, nil)
	p.Set(Fault{Status: 500, Times: 2})
	var codes []int
	for range 4 {
		code, err := get(http.DefaultClient, p.URL+"/x")
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[500 500 200 200]" {
		t.Fatalf("codes %v", codes)
	}
}

func TestHTTPHang(t *testing.T) {
	b := newBackend(t)
	p := NewHTTP(t, b.URL, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	start := func() chan int {
		ch := make(chan int, 1)
		go func() {
			code, _ := get(c, p.URL+"/h")
			ch <- code
		}()
		return ch
	}
	waitHeld := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); p.InFlight("") < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d requests in flight, want %d", p.InFlight(""), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	p.Set(Fault{Hang: true})
	first := start()
	waitHeld(1)
	p.Release()
	if code := <-first; code != 200 {
		t.Fatalf("released: %d", code)
	}

	second := start()
	waitHeld(1)
	select {
	case code := <-second:
		t.Fatalf("answered while hanging: %d", code)
	case <-time.After(200 * time.Millisecond):
	}
	p.Set(Fault{Status: 503})
	if code := <-second; code != 503 {
		t.Fatalf("held, then the fault changed to 503: %d", code)
	}

	// A client that gives up while held is never forwarded.
	p.Set(Fault{Hang: true})
	calls := b.calls.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/gone", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("answered while hanging")
	}
	for deadline := time.Now().Add(2 * time.Second); p.InFlight("") > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned request is still held")
		}
	}
	p.Clear()
	if b.calls.Load() != calls {
		t.Fatal("an abandoned request was forwarded")
	}
	ev := p.Events()
	if last := ev[len(ev)-1]; !last.Canceled || last.Forwarded {
		t.Fatalf("abandoned request: %+v", last)
	}
}

func TestHTTPDelays(t *testing.T) {
	b := newBackend(t)
	p := NewHTTP(t, b.URL, nil)

	p.Set(Fault{Delay: 150 * time.Millisecond})
	t0 := time.Now()
	if code, err := get(http.DefaultClient, p.URL+"/d"); err != nil || code != 200 || time.Since(t0) < 150*time.Millisecond {
		t.Fatalf("delayed: %d %v after %v", code, err, time.Since(t0))
	}

	// A request delayed longer than its client waits never reaches the
	// target.
	p.Set(Fault{Delay: time.Second})
	calls := b.calls.Load()
	short := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := get(short, p.URL+"/d"); err == nil {
		t.Fatal("answered before the delay")
	}
	time.Sleep(1200 * time.Millisecond)
	if b.calls.Load() != calls {
		t.Fatal("a delayed request was forwarded after its client left")
	}

	// A held response: the target acted, the client did not hear.
	p.Set(Fault{ResponseDelay: time.Second})
	if _, err := get(short, p.URL+"/r"); err == nil {
		t.Fatal("answered before the response delay")
	}
	if b.calls.Load() != calls+1 {
		t.Fatal("the request was not forwarded")
	}
}

// tokenEndpoint imitates a token endpoint with strict rotation: each
// refresh token is good once.
func tokenEndpoint(t *testing.T) *httptest.Server {
	var mu sync.Mutex
	n := 0
	valid := map[string]bool{"rt0": true}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		rt := r.PostForm.Get("refresh_token")
		if !valid[rt] {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"invalid_grant"}`)
			return
		}
		delete(valid, rt)
		n++
		next := fmt.Sprintf("rt%d", n)
		valid[next] = true
		fmt.Fprintf(w, `{"access_token":"at%d","token_type":"bearer","expires_in":60,"refresh_token":%q}`, n, next)
	}))
	t.Cleanup(s.Close)
	return s
}

func refresh(t *testing.T, u, rt string) int {
	t.Helper()
	resp, err := http.PostForm(u, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestHTTPRefreshTokens(t *testing.T) {
	p := NewHTTP(t, tokenEndpoint(t).URL, GrantType)
	if code := refresh(t, p.URL+"/token", "rt0"); code != 200 || p.LastIssued() != "rt1" || !p.Issued("rt1") {
		t.Fatalf("first refresh: %d", code)
	}
	if p.RedeemedTwice() != 0 {
		t.Fatal("one redemption counted twice")
	}
	if code := refresh(t, p.URL+"/token", "rt0"); code != 400 || p.RedeemedTwice() != 1 || p.Redemptions() != 2 {
		t.Fatalf("reuse: %d, twice %d", code, p.RedeemedTwice())
	}
	if p.Count("refresh_token") != 2 || p.Succeeded("refresh_token") != 1 {
		t.Fatalf("count %d, succeeded %d", p.Count("refresh_token"), p.Succeeded("refresh_token"))
	}

	// Injected errors are not redemptions; racing requests are noticed
	// even when the fault keeps them from the target.
	p.Set(OAuthError(401, "invalid_client"))
	resp, err := http.PostForm(p.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || string(b) != `{"error":"invalid_client"}` || p.Redemptions() != 2 {
		t.Fatalf("invalid_client: %d %s", resp.StatusCode, b)
	}
	p.Set(Fault{Match: Grant("refresh_token"), Hang: true})
	done := make(chan int, 2)
	go func() { done <- refresh(t, p.URL+"/token", "rt1") }()
	for deadline := time.Now().Add(2 * time.Second); p.InFlight("refresh_token") < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not held")
		}
	}
	go func() { done <- refresh(t, p.URL+"/token", "rt1") }()
	for deadline := time.Now().Add(2 * time.Second); p.InFlight("refresh_token") < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not held")
		}
	}
	if p.ConcurrentRedemptions() != 1 {
		t.Fatalf("concurrent redemptions %d, want 1", p.ConcurrentRedemptions())
	}
	p.Set(Fault{Status: 503})
	if a, b := <-done, <-done; a != 503 || b != 503 {
		t.Fatalf("released into 503: %d %d", a, b)
	}
	if p.LastIssued() != "rt1" {
		t.Fatal("a faulted answer counted as issued")
	}
}

func TestVaultKind(t *testing.T) {
	for _, tt := range []struct{ method, path, want string }{
		{"GET", "/v1/secret/data/p/tokens/demo", "read"},
		{"PUT", "/v1/secret/data/p/tokens/demo", "write"},
		{"POST", "/v1/secret/data/p/leases/demo", "write"},
		{"DELETE", "/v1/secret/metadata/p/tokens/demo", "delete"},
		{"LIST", "/v1/secret/metadata/p/flows", "list"},
		{"GET", "/v1/sys/health", "health"},
		{"POST", "/v1/auth/approle/login", "other"},
	} {
		r := httptest.NewRequest(tt.method, tt.path, nil)
		if got := VaultKind(r); got != tt.want {
			t.Errorf("%s %s: %s, want %s", tt.method, tt.path, got, tt.want)
		}
	}
}
