package vault

import (
	"context"
	"errors"
	"fmt"
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
