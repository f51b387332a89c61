package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
)

// TestFaultSlowTokenRequestTwoReplicas proves that a refresh whose token
// request outlasts the refresh lease (30 s) does not make the other
// replica redeem the same refresh token: with two replicas of the binary
// sharing Vault under load, the first refresh request is held 33 s at the
// token endpoint (and forwarded only if its client still waits). No
// refresh token may be sent while another request with it is in flight,
// none may reach the provider twice, nobody is told to authorize again,
// no request waits beyond max_wait, and both replicas serve again
// afterwards with the token Vault holds.
func TestFaultSlowTokenRequestTwoReplicas(t *testing.T) {
	w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portA), 0) // 6 s tokens
	a, b := w.connectedReplicas(t, "max_wait 3s")
	urls := []string{a.url() + "/demo/items", b.url() + "/demo/items"}

	const slow = 33 * time.Second
	w.tok.Set(faultproxy.Fault{Match: faultproxy.Grant("refresh_token"), Delay: slow, Times: 1})
	l := startLoad(t, 10, 3*time.Minute, urls...)
	if !waitUntil(15*time.Second, func() bool { return w.tok.InFlight("refresh_token") > 0 }) {
		t.Fatalf("no refresh started; %s", w.tokenReport())
	}
	held := time.Now()
	// Past the slow request, both replicas must serve again.
	time.Sleep(slow)
	ok := waitUntil(40*time.Second, func() bool { return l.okAfter(held.Add(slow), urls...) })
	outs := l.Stop()
	if !ok {
		t.Errorf("the replicas did not both serve again after the slow request (%s); %s", summary(outs), w.tokenReport())
	}
	checkNoReauthorization(t, outs)
	checkUnavailable(t, outs, "token_unavailable")
	checkWaits(t, outs)
	w.checkRotation(t, 1)
	for _, u := range urls {
		if o := get(http.DefaultClient, u); o.status != http.StatusOK {
			t.Errorf("at the end: %v", o)
		}
	}
}

// TestFaultDisconnectReachesOtherReplica proves that a disconnect on one
// replica takes effect on another that holds the token in its cache: with
// revalidate_interval 2s, replica B stops attaching the old access token
// (which the provider still honours: there is no revocation URL) within
// 2 s plus a round trip, and answers authorization_required from then on.
func TestFaultDisconnectReachesOtherReplica(t *testing.T) {
	// Tokens of 3 minutes: B would otherwise use its cached one for two.
	w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portA), 3*time.Minute)
	a, b := w.connectedReplicas(t, "max_wait 3s\nrevalidate_interval 2s")
	old, _ := w.stored(t)["access_token"].(string)
	bURL := b.url() + "/demo/items"
	if o := get(http.DefaultClient, bURL); o.status != http.StatusOK || w.up.last(t).Authorization != "Bearer "+old {
		t.Fatalf("replica B before the disconnect: %v", o)
	}
	usedOld := func() int {
		n := 0
		for _, r := range w.up.Seen() {
			if r.Authorization == "Bearer "+old {
				n++
			}
		}
		return n
	}

	disconnectVia(t, a)
	deadline := time.Now().Add(2*time.Second + time.Second) // revalidate_interval + a round trip
	var outs []outcome
	poll := func(until time.Time) {
		for time.Now().Before(until) {
			outs = append(outs, get(http.DefaultClient, bURL))
			time.Sleep(100 * time.Millisecond)
		}
	}
	poll(deadline)
	// The polls are sequential: every request sent before the deadline
	// has reached the upstream by now.
	atDeadline := usedOld()
	poll(deadline.Add(2 * time.Second))
	if got := usedOld(); got != atDeadline {
		t.Errorf("replica B attached the disconnected token %d times after revalidate_interval had passed", got-atDeadline)
	}
	if n, ex := failing(outs, func(o outcome) bool { return o.sent.After(deadline) && o.code != "authorization_required" }); n > 0 {
		t.Errorf("%d requests to B after the deadline were not told to authorize (%s), e.g.\n\t%s", n, summary(outs), ex)
	}
}

// TestFaultReconnectWhileAnotherReplicaRefreshes proves that a person's
// reconnect survives a refresh of the grant it replaced: replica B's
// refresh of the first grant is held at the token endpoint while the
// person connects again through replica A (a new grant, a new
// generation); then Hydra answers B's refresh. B's write of that token set
// loses Vault's check-and-set and must be discarded: Vault keeps the
// reconnected grant, both replicas attach its access token, and nobody is
// asked to authorize a third time.
func TestFaultReconnectWhileAnotherReplicaRefreshes(t *testing.T) {
	w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portA), 0) // 6 s tokens
	a, b := w.connectedReplicas(t, "max_wait 3s")
	first, _ := w.stored(t)["generation"].(string)

	w.holdRefresh(t, b) // B's refresh of the first grant

	// The reconnected grant's tokens outlive the test: no refresh of it
	// blurs what Vault must hold.
	if err := w.h.SetAccessTokenLifespan(w.c, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	connect(t, &sidecar{base: a.url()}, newBrowser())
	rec := w.stored(t)
	gen, _ := rec["generation"].(string)
	rt, _ := rec["refresh_token"].(string)
	at, _ := rec["access_token"].(string)
	if gen == "" || gen == first || rt == "" || rt != w.tok.LastIssued() {
		t.Fatalf("after the reconnect Vault holds generation %q (first %q), and not the refresh token the provider just issued (%t)",
			gen, first, rt == w.tok.LastIssued())
	}

	// Hydra now answers B's refresh of the first grant.
	w.releaseRefresh(t)
	rec = w.stored(t)
	if g, _ := rec["generation"].(string); g != gen || rec["refresh_token"] != rt {
		t.Fatalf("Vault no longer holds the reconnected grant: generation %q (want %q), its refresh token kept: %t",
			g, gen, rec["refresh_token"] == rt)
	}
	for name, p := range map[string]*process{"A": a, "B": b} {
		if o := get(http.DefaultClient, p.url()+"/demo/items"); o.status != http.StatusOK {
			t.Errorf("replica %s afterwards: %v", name, o)
		} else if w.up.last(t).Authorization != "Bearer "+at {
			t.Errorf("replica %s afterwards attached another token than the reconnected grant's", name)
		}
	}
	if w.tok.RedeemedTwice() != 0 || w.tok.ConcurrentRedemptions() != 0 || w.tok.Count("refresh_token") != 1 {
		t.Errorf("want 1 refresh, none redeemed twice; %s", w.tokenReport())
	}
	if n := w.tok.Count("authorization_code"); n != 2 {
		t.Errorf("%d authorizations, want 2 (the connect and the reconnect)", n)
	}
}

// TestFaultDisconnectWhileAnotherReplicaRefreshes proves that a disconnect
// cannot be undone by a refresh that was already under way: replica B's
// refresh waits at the token endpoint while the connection is disconnected
// through replica A; then Hydra answers it with a new token set (the test
// provider has no revocation URL, so the grant is still alive there). B
// must discard that set: Vault keeps the tombstone, holding no token, and
// both replicas answer authorization_required without sending anything
// upstream.
func TestFaultDisconnectWhileAnotherReplicaRefreshes(t *testing.T) {
	w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portA), 0) // 6 s tokens
	a, b := w.connectedReplicas(t, "max_wait 3s")

	w.holdRefresh(t, b)
	disconnectVia(t, a)
	w.releaseRefresh(t)
	rec := w.stored(t)
	if rec["state"] != "disconnected" || rec["access_token"] != nil || rec["refresh_token"] != nil {
		t.Fatalf("Vault holds a record of state %v with fields %v after the disconnect; want the tombstone", rec["state"], keys(rec))
	}
	seen := len(w.up.Seen())
	for name, p := range map[string]*process{"A": a, "B": b} {
		if o := get(http.DefaultClient, p.url()+"/demo/items"); o.status != http.StatusUnauthorized || o.code != "authorization_required" {
			t.Errorf("replica %s afterwards: %v; want 401 authorization_required", name, o)
		}
	}
	if n := len(w.up.Seen()) - seen; n != 0 {
		t.Errorf("the upstream received %d requests after the disconnect", n)
	}
	if w.tok.RedeemedTwice() != 0 || w.tok.Count("refresh_token") != 1 {
		t.Errorf("want 1 refresh, none redeemed twice; %s", w.tokenReport())
	}
}
