package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/vaultcluster"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

func TestParseAddresses(t *testing.T) {
	for _, bad := range []string{"unix:///run/vault.sock", "127.0.0.1:8200", "http://v/prefix", "http://u:p@v:8200", "http://v?x=1", "http://"} {
		if _, err := New(Config{Address: "http://127.0.0.1:8200", Addresses: []string{bad}}); err == nil {
			t.Errorf("address %q accepted", bad)
		} else if strings.Contains(err.Error(), "u:p") {
			t.Errorf("the error repeats user information: %v", err)
		}
	}
	s, err := New(Config{Address: "http://127.0.0.1:8200", Addresses: []string{"http://127.0.0.1:8202/", "https://vault-b:8200"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Address(), "http://127.0.0.1:8200 (of http://127.0.0.1:8200, http://127.0.0.1:8202/, https://vault-b:8200)"; got != want {
		t.Errorf("Address() = %q, want %q", got, want)
	}
}

// TestUnavailable classifies nodes' answers: which ones send the request
// to the next address; a body read to classify an answer is left for the
// client to read.
func TestUnavailable(t *testing.T) {
	answer := func(status int, body string) *http.Response {
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}}
	}
	for _, tt := range []struct {
		resp *http.Response
		err  error
		next bool
	}{
		{nil, errors.New("dial tcp 127.0.0.1:8200: connect: connection refused"), true},
		{answer(503, `{"errors":["Vault is sealed"]}`), nil, true},
		{answer(502, ""), nil, true},
		{answer(504, ""), nil, true},
		{answer(500, `{"errors":["local node not active but active cluster node not found"]}`), nil, true},
		{answer(500, `{"errors":["could not find version data"]}`), nil, false},
		{answer(400, `{"errors":["check-and-set parameter did not match the current version"]}`), nil, false},
		{answer(403, `{"errors":["permission denied"]}`), nil, false},
		{answer(200, `{"data":{}}`), nil, false},
	} {
		if _, why := unavailable(tt.resp, tt.err); (why != "") != tt.next {
			what := fmt.Sprint(tt.err)
			if tt.resp != nil {
				what = tt.resp.Status
			}
			t.Errorf("%s: next address = %t, want %t", what, why != "", tt.next)
		}
	}
	// A 500 body read for classification is still there for the client.
	resp, _ := unavailable(answer(500, "kept"), nil)
	if b, _ := io.ReadAll(resp.Body); string(b) != "kept" {
		t.Errorf("body after classification = %q", b)
	}
}

// TestFollowRedirect: a standby that does not forward redirects to the
// active node; when that node is one of the cluster's addresses, the store
// uses it from then on, and the redirect leads the client (which builds
// every URL on the first address) there.
func TestFollowRedirect(t *testing.T) {
	addrs, err := parseAddresses([]string{"http://n1:8200", "http://n2:8200", "http://n3:8200"})
	if err != nil {
		t.Fatal(err)
	}
	f := &failover{addrs: addrs}
	f.cur.Store(1)
	resp := &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {"http://n3:8200/v1/secret/data/x"}}}
	f.follow(resp, 1)
	if f.current() != "http://n3:8200" || resp.Header.Get("Location") != "http://n1:8200/v1/secret/data/x" {
		t.Fatalf("after the redirect: using %s, Location %s", f.current(), resp.Header.Get("Location"))
	}
	outside := &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {"http://elsewhere:8200/v1/x"}}}
	f.follow(outside, 2)
	if f.current() != "http://n3:8200" || outside.Header.Get("Location") != "http://elsewhere:8200/v1/x" {
		t.Fatalf("a redirect outside the cluster moved the store to %s", f.current())
	}
}

// TestFailoverToAnotherNode runs a store against a three-node Raft cluster
// with the first node's address first and the others after it. When that
// node (the leader) is killed, every read and write still succeeds, through
// the next address, once the cluster has elected a new leader; a store
// that knows only the killed node's address fails. The restarted node
// rejoins, and the store keeps using the node that answered.
func TestFailoverToAnotherNode(t *testing.T) {
	c := vaultcluster.Start(t, vaultcluster.SlotVault)
	leader := c.Leader()
	var others []string
	for i, a := range c.Addrs() {
		if i != leader {
			others = append(others, a)
		}
	}
	cfg := Config{Address: c.Addr(leader), Addresses: others, Token: c.RootToken(), Prefix: fmt.Sprintf("failover-%d", time.Now().UnixNano())}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	single, err := New(Config{Address: c.Addr(leader), Token: c.RootToken(), Prefix: cfg.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := s.Put(ctx, "tokens/demo", map[string]string{"access_token": "at-1"}, 0)
	if err != nil {
		t.Fatal(err)
	}

	c.Kill(leader)
	if _, err := c.WaitLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := single.Get(ctx, "tokens/demo"); err == nil {
		t.Error("a store with only the killed node's address still reads")
	}
	failures := 0
	for i := range 20 {
		e, err := s.Get(ctx, "tokens/demo")
		if err != nil {
			failures++
			t.Logf("read %d: %v", i, err)
			continue
		}
		if e.Version != v {
			t.Fatalf("read version %d, want %d", e.Version, v)
		}
		nv, err := s.Put(ctx, "tokens/demo", map[string]string{"access_token": fmt.Sprintf("at-%d", i+2)}, v)
		if err != nil {
			failures++
			t.Logf("write %d: %v", i, err)
			continue
		}
		v = nv
	}
	if failures > 0 {
		t.Errorf("%d of 40 calls failed with the leader's node down; want 0", failures)
	}
	if !strings.HasPrefix(s.Address(), others[0]+" ") {
		t.Errorf("the store uses %s, want the first address that answered, %s", s.Address(), others[0])
	}

	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	e, err := s.Get(ctx, "tokens/demo")
	if err != nil || e.Data["access_token"] != "at-21" {
		t.Fatalf("after the restart: %v, %v", e, err)
	}
	if _, err := s.Put(ctx, "tokens/demo", map[string]string{"access_token": "x"}, e.Version-1); !errors.Is(err, kv.ErrConflict) {
		t.Errorf("a stale check-and-set write through a standby: %v, want a conflict", err)
	}
}
