package caddymodule

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAbandonedFlowsLockNoOneOut: 40 client addresses each start a flow
// and abandon it, twice the connector's max_pending_flows; a 41st client
// still connects, and the store keeps no more pending flows than the cap.
func TestAbandonedFlowsLockNoOneOut(t *testing.T) {
	s := startServer(t, testOptions{app: "max_pending_flows 20"})
	for i := range 40 {
		ip := fmt.Sprintf("10.0.0.%d", i+1)
		if state, resp := s.authorize(t, newClient().from(ip)); state == "" {
			t.Errorf("authorize from %s: %d", ip, resp.StatusCode)
		}
	}
	c := newClient().from("10.0.1.1")
	s.connect(t, c)
	if resp, body := newClient().do(t, "GET", s.base+"/demo/items", nil, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy after connecting: %d %s", resp.StatusCode, body)
	}
	if n := pendingRecords(t, s); n > 20 {
		t.Fatalf("the store holds %d pending flows; the cap is 20", n)
	}
}

// TestPendingFlowsPerClient: one client address, or one user whatever
// their addresses, holds at most max_pending_flows_per_client flows of a
// connector; one more drops their oldest, and nobody else's.
func TestPendingFlowsPerClient(t *testing.T) {
	const alice = "alice $2a$04$lkzK/naoQuUXne1mfpqImeNxwlLQkFEXsuT0SIr8GZDikXECc0yI."
	for _, tt := range []struct {
		name, site string
		client     func(i int) *client
	}{
		{"five browsers behind one address", "", func(int) *client { return newClient().from("10.0.0.1") }},
		{"one user from five addresses", "basic_auth /oauth/* {\n\t\t" + alice + "\n\t}", func(i int) *client {
			c := newClient().from(fmt.Sprintf("10.0.1.%d", i+1))
			c.headers.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:alice-pw")))
			return c
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, testOptions{app: "max_pending_flows_per_client 3", site: tt.site})
			// Someone else's flow, started first. (With basic_auth, only
			// alice exists: an unknown user costs a slow bcrypt.)
			other := newClient().from("10.9.9.9")
			var otherState string
			if tt.site == "" {
				otherState, _ = s.authorize(t, other)
			}
			var clients []*client
			var states []string
			for i := range 5 {
				clients = append(clients, tt.client(i))
				st, resp := s.authorize(t, clients[i])
				if st == "" {
					t.Fatalf("authorize %d: %d", i+1, resp.StatusCode)
				}
				states = append(states, st)
			}
			for i := range 5 {
				resp, body := s.callback(t, clients[i], states[i], fmt.Sprintf("code-%d", i))
				if want := map[bool]int{true: http.StatusBadRequest, false: http.StatusSeeOther}[i < 2]; resp.StatusCode != want {
					t.Errorf("flow %d: %d, want %d: %s", i+1, resp.StatusCode, want, body)
				}
			}
			if tt.site == "" {
				if resp, body := s.callback(t, other, otherState, "c"); resp.StatusCode != http.StatusSeeOther {
					t.Fatalf("another client's flow: %d %s", resp.StatusCode, body)
				}
			}
		})
	}
}

// TestRefusedCallbackFreesItsSlot: a flow refused at the callback (another
// browser) ends at once, so it no longer counts against the cap.
func TestRefusedCallbackFreesItsSlot(t *testing.T) {
	s := startServer(t, testOptions{app: "max_pending_flows 2"})
	a, b, c := newClient().from("10.0.0.1"), newClient().from("10.0.0.2"), newClient().from("10.0.0.3")
	stateA, resp := s.authorize(t, a)
	stateB, _ := s.authorize(t, b)
	if stateA == "" || stateB == "" {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	if resp, body := s.callback(t, newClient(), stateA, "stolen"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign callback: %d %s", resp.StatusCode, body)
	}
	if n := pendingRecords(t, s); n != 1 {
		t.Fatalf("%d pending flows after the refused callback; want 1", n)
	}
	if st, resp := s.authorize(t, c); st == "" {
		t.Fatalf("third flow: %d", resp.StatusCode)
	}
	if resp, body := s.callback(t, b, stateB, "code-b"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("b's flow: %d %s", resp.StatusCode, body)
	}
}

// TestRateLimitGroupsIPv6 : the rate limit counts an IPv6 /64 (by default)
// as one client: a host cannot get a new budget from each of its
// addresses, and other networks keep theirs.
func TestRateLimitGroupsIPv6(t *testing.T) {
	for _, tt := range []struct {
		option  string
		limited bool
	}{{"", true}, {"ipv6_prefix 128", false}} {
		t.Run("option "+tt.option, func(t *testing.T) {
			s := startServer(t, testOptions{app: "rate_limit 3 1m\n" + tt.option})
			var codes []int
			for i := range 4 {
				_, resp := s.authorize(t, newClient().from(fmt.Sprintf("2001:db8:1:2::%x", i+1)))
				codes = append(codes, resp.StatusCode)
			}
			if limited := codes[3] == http.StatusTooManyRequests; limited != tt.limited || codes[2] != http.StatusFound {
				t.Fatalf("four addresses of one /64 got %v", codes)
			}
			if _, resp := s.authorize(t, newClient().from("2001:db8:1:3::1")); resp.StatusCode != http.StatusFound {
				t.Fatalf("another /64: %d", resp.StatusCode)
			}
		})
	}
}

// pendingRecords counts the pending authorizations in the file store.
func pendingRecords(t *testing.T, s *testServer) int {
	t.Helper()
	// The sweeper and evictions delete in the background of requests;
	// give them a moment.
	time.Sleep(50 * time.Millisecond)
	entries, err := os.ReadDir(filepath.Join(s.storeDir, "oauthconn", "records", "states"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".rec") {
			n++
		}
	}
	return n
}

func TestPendingFlowsDisplace(t *testing.T) {
	p := newPendingFlows(3, 2)
	t0 := time.Now()
	exp := t0.Add(10 * time.Minute)
	add := func(client, id string, now time.Time) string {
		return strings.Join(p.add("demo", client, id, now, exp), ",")
	}
	for _, tt := range []struct{ client, id, displaced string }{
		{"A", "a1", ""}, {"A", "a2", ""},
		{"A", "a3", "a1"}, // A's own oldest
		{"B", "b1", ""},
		{"C", "c1", "a2"}, // the connector's oldest
	} {
		if got := add(tt.client, tt.id, t0); got != tt.displaced {
			t.Fatalf("adding %s displaced %q, want %q", tt.id, got, tt.displaced)
		}
	}
	if n := p.count("demo"); n != 3 {
		t.Fatalf("%d flows counted, want 3", n)
	}
	if got := p.add("other", "A", "o1", t0, exp); len(got) != 0 || p.count("other") != 1 {
		t.Fatalf("another connector's flows displaced %v", got)
	}
	p.done("b1")
	p.done("b1")
	p.done("never-counted")
	if n := p.count("demo"); n != 2 {
		t.Fatalf("%d flows counted after one finished, want 2", n)
	}
	// Expired flows are forgotten without being returned: the sweeper
	// deletes their records.
	if got := add("D", "d1", exp); got != "" || p.count("demo") != 1 {
		t.Fatalf("after expiry: displaced %q, %d counted", got, p.count("demo"))
	}
}
