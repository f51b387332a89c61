package flow

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

func newFlows(t *testing.T, now func() time.Time) (*Flows, *filestore.Store) {
	st, err := filestore.New(t.TempDir(), bytes.Repeat([]byte{3}, filestore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return New(st, 0, now), st
}

func TestBeginFinish(t *testing.T) {
	f, st := newFlows(t, nil)
	ctx := context.Background()
	s, err := f.Begin(ctx, Params{Connector: "demo", ReturnTo: "/after", CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.State) < 22 || len(s.Binding) < 22 || len(s.Verifier) < 43 {
		t.Fatalf("secrets too short: %d %d %d", len(s.State), len(s.Binding), len(s.Verifier))
	}
	if s.ID != ID(s.State) {
		t.Fatalf("ID %q, ID(state) %q", s.ID, ID(s.State))
	}
	ids, _ := st.List(ctx, "states")
	if len(ids) != 1 || strings.Contains(ids[0], s.State) {
		t.Fatalf("state records = %v; the state must not name its record", ids)
	}

	// Another user, or nobody, consumes nothing.
	for _, by := range []string{"bob", ""} {
		if _, err := f.Finish(ctx, s.State, s.Binding, by); !errors.Is(err, ErrOtherUser) {
			t.Fatalf("finished by %q: %v", by, err)
		}
	}
	// The wrong browser consumes nothing.
	if _, err := f.Finish(ctx, s.State, "other-binding", "alice"); !errors.Is(err, ErrNotBound) {
		t.Fatalf("wrong binding: %v", err)
	}
	if _, err := f.Finish(ctx, s.State, "", "alice"); !errors.Is(err, ErrNotBound) {
		t.Fatalf("no binding: %v", err)
	}
	fl, err := f.Finish(ctx, s.State, s.Binding, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if fl.Connector != "demo" || fl.Verifier != s.Verifier || fl.ReturnTo != "/after" || fl.CreatedBy != "alice" {
		t.Fatalf("flow = %+v", fl)
	}
	// Single use.
	if _, err := f.Finish(ctx, s.State, s.Binding, "alice"); !errors.Is(err, ErrUnknownState) {
		t.Fatalf("replay: %v", err)
	}
	if ids, _ := st.List(ctx, "states"); len(ids) != 0 {
		t.Fatalf("finished flow left records %v", ids)
	}
	if _, err := f.Finish(ctx, "never-issued", s.Binding, "alice"); !errors.Is(err, ErrUnknownState) {
		t.Fatalf("unknown state: %v", err)
	}
}

func TestDrop(t *testing.T) {
	f, st := newFlows(t, nil)
	ctx := context.Background()
	s, err := f.Begin(ctx, Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Drop(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if ids, _ := st.List(ctx, "states"); len(ids) != 0 {
		t.Fatalf("dropped flow left records %v", ids)
	}
	if _, err := f.Finish(ctx, s.State, s.Binding, ""); !errors.Is(err, ErrUnknownState) {
		t.Fatalf("finishing a dropped flow: %v", err)
	}
	if err := f.Drop(ctx, s.ID); err != nil {
		t.Fatalf("dropping twice: %v", err)
	}
	for _, bad := range []string{"", "../tokens/demo", strings.Repeat("g", 64), strings.ToUpper(s.ID)} {
		if err := f.Drop(ctx, bad); err == nil {
			t.Errorf("Drop(%q) accepted", bad)
		}
	}
}

func TestExpiredFlow(t *testing.T) {
	now := time.Now()
	f, _ := newFlows(t, func() time.Time { return now })
	s, err := f.Begin(context.Background(), Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(DefaultTTL + time.Second)
	if _, err := f.Finish(context.Background(), s.State, s.Binding, ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
}

func TestConcurrentFinishRedeemsOnce(t *testing.T) {
	f, _ := newFlows(t, nil)
	s, err := f.Begin(context.Background(), Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.Finish(context.Background(), s.State, s.Binding, ""); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d callbacks succeeded with one state; want 1", ok.Load())
	}
}

func TestSweep(t *testing.T) {
	now := time.Now()
	f, st := newFlows(t, func() time.Time { return now })
	ctx := context.Background()
	if _, err := f.Begin(ctx, Params{Connector: "old"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(DefaultTTL + time.Minute)
	fresh, err := f.Begin(ctx, Params{Connector: "new"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if ids, _ := st.List(ctx, "states"); len(ids) != 1 {
		t.Fatalf("after sweep: %v", ids)
	}
	if _, err := f.Finish(ctx, fresh.State, fresh.Binding, ""); err != nil {
		t.Fatalf("sweep removed a live flow: %v", err)
	}
}

func TestSafeReturnTo(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"/", "/"},
		{"/dashboard?tab=1#x", "/dashboard?tab=1#x"},
		{"/a/b%20c", "/a/b%20c"},
		{"", "/oauth/"},
		{"dashboard", "/oauth/"},
		{"//evil.example", "/oauth/"},
		{"/\\evil.example", "/oauth/"},
		{"\\\\evil.example", "/oauth/"},
		{"https://evil.example/", "/oauth/"},
		{"javascript:alert(1)", "/oauth/"},
		{"/%2fevil.example", "/oauth/"},
		{"/%5cevil.example", "/oauth/"},
		{"/%252f%252fevil.example", "/oauth/"},
		{"/\t/evil.example", "/oauth/"},
		{"/x\r\nSet-Cookie: a=b", "/oauth/"},
		{"/%0d%0aSet-Cookie:a", "/oauth/"},
		{"/%E2%80%A8x", "/oauth/"},
		{" /x", "/oauth/"},
	}
	for _, tt := range tests {
		if got := SafeReturnTo(tt.in, "/oauth/"); got != tt.want {
			t.Errorf("SafeReturnTo(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestOpenRedirectCorpus: none of the payloads in testdata/open-redirects.txt
// is accepted as a return destination.
func TestOpenRedirectCorpus(t *testing.T) {
	b, err := os.ReadFile("testdata/open-redirects.txt")
	if err != nil {
		t.Fatal(err)
	}
	policy := ReturnTo{AllowedOrigins: []string{"https://good.example"}}
	n := 0
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, err := strconv.Unquote(line)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		n++
		if got := policy.Safe(p, "FALLBACK"); got != "FALLBACK" {
			t.Errorf("accepted %q", p)
		}
	}
	if n < 300 {
		t.Fatalf("corpus has %d payloads, want at least 300", n)
	}
}

func TestAllowedReturnOrigins(t *testing.T) {
	policy := ReturnTo{AllowedOrigins: []string{"https://good.example", "http://localhost:3000/"}}
	for _, ok := range []string{"https://good.example", "https://good.example/dash?x=1#y", "https://good.example?x", "http://localhost:3000/app", "/local", "/caf%C3%A9"} {
		if got := policy.Safe(ok, "FALLBACK"); got != ok {
			t.Errorf("Safe(%q) = %q, want it accepted", ok, got)
		}
	}
}

func TestParseCallback(t *testing.T) {
	tests := []struct {
		raw     string
		want    Callback
		wantErr string
	}{
		{raw: "code=c&state=s&iss=https%3A%2F%2Fas", want: Callback{State: "s", Code: "c", Iss: "https://as"}},
		{raw: "state=s&error=access_denied&error_description=nope", want: Callback{State: "s", Error: "access_denied", ErrorDescription: "nope"}},
		{raw: "code=c", wantErr: "no state"},
		{raw: "state=s", wantErr: "exactly one of code and error"},
		{raw: "state=s&code=c&error=x", wantErr: "exactly one of code and error"},
		{raw: "state=s&state=t&code=c", wantErr: "state appears 2 times"},
		{raw: "state=s&code=" + strings.Repeat("a", 5000), wantErr: "code is too long"},
		{raw: "state=%zz&code=c", wantErr: "does not parse"},
	}
	for _, tt := range tests {
		got, err := ParseCallback(tt.raw)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadCallback) {
				t.Errorf("ParseCallback(%.40q) err = %v, want %q", tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCallback(%q) = %+v, %v", tt.raw, got, err)
		}
	}
}

// TestFinishOnceAcrossInstances: instances sharing Vault (each with its own
// client) race to finish one flow; exactly one wins.
func TestFinishOnceAcrossInstances(t *testing.T) {
	env := testservices.Vault(t)
	prefix := "flow-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var instances []*Flows
	for range 4 {
		st, err := vault.New(vault.Config{Address: env.Addr, Token: env.Token, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		instances = append(instances, New(st, 0, nil))
	}
	s, err := instances[0].Begin(context.Background(), Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := instances[i%4].Finish(context.Background(), s.State, s.Binding, ""); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrUnknownState) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d of 16 concurrent callbacks on 4 instances redeemed the state; want 1", ok.Load())
	}
}
