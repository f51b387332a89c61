package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/vaultcluster"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// Ports of TestRaftLeaderLoss's replicas (admin: +100).
const portRaft = 9195 // and the two above

// raftStore is the store block of a replica that talks to node first of
// the cluster, and to the other nodes when it is down, as the README's
// "Vault high availability" section deploys it.
func raftStore(c *vaultcluster.Cluster, first int, prefix string) string {
	addrs := []string{c.Addr(first)}
	for i, a := range c.Addrs() {
		if i != first {
			addrs = append(addrs, a)
		}
	}
	return fmt.Sprintf("store vault {\n\t\t\taddress %s\n\t\t\ttoken {env.RAFT_VAULT_TOKEN}\n\t\t\tprefix %s\n\t\t}",
		strings.Join(addrs, " "), prefix)
}

// TestRaftLeaderLoss runs three replicas of the binary, each talking to a
// different node of a three-node Vault cluster with Raft storage (its own
// node first, the others as fallbacks), sharing one connection to Hydra,
// under steady load through all three. The Raft leader is killed while
// the access token is valid and not yet due: no request fails (cached
// tokens serve through the election). Past the election the token falls
// due and is refreshed: every replica serves the new token, including the
// one whose node is dead (through its next address), no refresh token is
// redeemed twice or concurrently, nobody authorizes again, and Vault holds
// the connection, active, with the last refresh token Hydra issued. The
// killed node, restarted, rejoins as a healthy voter.
func TestRaftLeaderLoss(t *testing.T) {
	c := vaultcluster.Start(t, vaultcluster.SlotE2E)
	rec, err := vault.New(vault.Config{Address: c.Addr(0), Addresses: c.Addrs()[1:], Token: c.RootToken()})
	if err != nil {
		t.Fatal(err)
	}
	w := &faultWorld{h: newHydra(t), prefix: "e2e-raft-" + hydradev.RandomHex(6), vault: rec.Client()}
	w.up = newUpstream(t, w.h)
	w.c = w.h.createClient(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portRaft), "client_secret_basic")
	// Tokens of 20 s: due at two thirds (13 s), so that the leader dies
	// and a new one is elected while the token is valid and not due.
	const ttl = 20 * time.Second
	if err := w.h.SetAccessTokenLifespan(w.c, ttl); err != nil {
		t.Fatal(err)
	}
	w.tok = faultproxy.NewHTTP(t, w.h.PublicURL, faultproxy.GrantType)

	leader := c.Leader()
	env := append(w.replicaEnv(portRaft), "RAFT_VAULT_TOKEN="+c.RootToken())
	var urls []string
	var onDead string // the replica whose own node is the leader
	for i := range vaultcluster.Size {
		r := startBinary(t, portRaft+i, raftStore(c, i, w.prefix), "max_wait 3s", env, "")
		urls = append(urls, r.url()+"/demo/items")
		if i == leader {
			onDead = r.url() + "/demo/items"
		}
		if i == 0 {
			connect(t, &sidecar{base: r.url()}, newBrowser())
		}
	}
	issued := w.storedExpiry(t).Add(-ttl)

	l := startLoad(t, 15, 80*time.Second, urls...)
	if !waitUntil(10*time.Second, func() bool { return l.okAfter(time.Now().Add(-time.Second), urls...) }) {
		t.Fatalf("the replicas do not serve before the fault (%s)", summary(l.Snapshot()))
	}
	refreshesBefore := w.tok.Count("refresh_token")
	killed := time.Now()
	c.Kill(leader)
	newLeader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Now()
	t.Logf("node %d killed %v after the token was issued; node %d elected after %v",
		leader+1, killed.Sub(issued).Round(100*time.Millisecond), newLeader+1, elected.Sub(killed).Round(100*time.Millisecond))
	if elected.After(issued.Add(ttl * 2 / 3)) {
		t.Logf("the election ended after the token fell due; refreshes may have waited for it")
	}

	// The token issued before the kill expires: every replica must serve
	// with a newer one afterwards.
	expired := issued.Add(ttl + time.Second)
	ok := waitUntil(time.Until(expired)+20*time.Second, func() bool { return l.okAfter(expired, urls...) })
	outs := l.Stop()
	if !ok {
		t.Errorf("not every replica served after the token the leader's death outlived had expired (%s); %s", summary(outs), w.tokenReport())
	}
	if n, ex := failing(outs, func(o outcome) bool { return o.status != http.StatusOK }); n > 0 {
		t.Errorf("%d of %d requests failed (%s), e.g.\n\t%s", n, len(outs), summary(outs), ex)
	}
	if n, _ := failing(outs, func(o outcome) bool { return o.url == onDead && o.sent.After(expired) && o.status == http.StatusOK }); n == 0 {
		t.Errorf("the replica whose Vault node was killed served nothing after the token expired")
	}
	if got := w.tok.Succeeded("refresh_token") - refreshesBefore; got < 1 {
		t.Errorf("no refresh succeeded after the election; %s", w.tokenReport())
	}
	w.checkRotation(t, 1)
	if st := w.stored(t); st == nil || st["state"] != nil || st["refresh_token"] == nil {
		t.Errorf("Vault does not hold an active connection: fields %v", keys(st))
	}
	t.Logf("%d requests (%s); %s", len(outs), summary(outs), w.tokenReport())

	if err := c.Restart(leader); err != nil {
		t.Fatalf("restarting node %d: %v", leader+1, err)
	}
	servers, err := c.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, s := range servers {
		if s.Voter {
			voters++
		}
	}
	st, err := c.AutopilotState()
	if err != nil || voters != vaultcluster.Size || !st.Healthy || len(st.Voters) != vaultcluster.Size {
		t.Fatalf("after the restart: %d voters in %+v; autopilot %+v, %v", voters, servers, st, err)
	}
	for _, u := range urls {
		if o := get(http.DefaultClient, u); o.status != http.StatusOK {
			t.Errorf("after the node rejoined: %v", o)
		}
	}
}
