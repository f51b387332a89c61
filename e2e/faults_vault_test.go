package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// TestFaultVaultOutage proves that Vault is off the hot path of a connection
// whose access token is cached and valid: while Vault refuses connections,
// black-holes them or answers 503, for 20 s each under 10 requests a second,
// no request fails and none waits longer than max_wait (+2 s), although the
// proxy keeps revalidating the record (every 2 s here) and so keeps running
// into the fault.
func TestFaultVaultOutage(t *testing.T) {
	// Tokens of 3 minutes: valid, and not yet due, through every outage.
	w := newFaultWorld(t, "http://localhost:9080/oauth/callback", 3*time.Minute)
	// No sweeps of expired authorizations: the only Vault traffic during
	// the outages is the connection's.
	s := w.startSidecar(t, sidecarConfig{connector: "max_wait 3s\nrevalidate_interval 2s", app: "sweep_interval 1h"})
	connect(t, s, newBrowser())
	app := s.base + "/demo/items"
	if o := get(http.DefaultClient, app); o.status != http.StatusOK {
		t.Fatalf("before the outage: %v", o)
	}
	rt := w.storedRT(t)

	const window = 20 * time.Second
	for _, tt := range []struct {
		name  string
		set   func()
		clear func()
		// tries counts the proxy's attempts to reach Vault through
		// the fault: new connections refused, requests sent into the
		// black hole, token reads answered 503.
		tries func() int64
	}{
		{"refused", func() { w.vtcp.SetMode(faultproxy.Refuse) }, func() { w.vtcp.SetMode(faultproxy.Pass) },
			func() int64 { return w.vtcp.Stats().Accepted }},
		{"black hole", func() { w.vtcp.SetMode(faultproxy.BlackHole) }, func() { w.vtcp.SetMode(faultproxy.Pass) },
			func() int64 { return w.vtcp.Stats().Dropped }},
		{"503", func() { w.vhttp.Set(faultproxy.Fault{Status: http.StatusServiceUnavailable}) }, w.vhttp.Clear,
			func() int64 { return int64(w.vhttp.Faulted("read")) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.tries()
			tt.set()
			l := startLoad(t, 10, window, app)
			<-l.done
			outs := l.Stop()
			tried := tt.tries() - before
			tt.clear()

			if len(outs) < 150 {
				t.Fatalf("only %d requests were sent in %v", len(outs), window)
			}
			if n, ex := failing(outs, func(o outcome) bool { return o.status != http.StatusOK }); n > 0 {
				t.Errorf("%d of %d requests failed with a valid token cached (%s), e.g.\n\t%s", n, len(outs), summary(outs), ex)
			}
			checkWaits(t, outs)
			if tried == 0 {
				t.Errorf("the proxy never tried Vault during the %v outage: no revalidation with revalidate_interval 2s", window)
			}
			if ok := waitUntil(5*time.Second, func() bool { return get(http.DefaultClient, app).status == http.StatusOK }); !ok {
				t.Error("the connection does not work after the outage")
			}
		})
	}
	if w.storedRT(t) != rt {
		t.Error("the stored refresh token changed although nothing was due")
	}
	w.checkRotation(t, 1)
}

// TestFaultVaultWriteFailsAfterRotation proves that a rotated refresh token
// is never lost: right after the token endpoint rotates the refresh token,
// Vault fails every write of the token record for 5 s (longer than Vault's
// client retries one write). The new token set must be used at once (Hydra
// revokes the previous access token when it rotates), stay authoritative
// in memory, and reach Vault once it answers again, so that no request
// fails, the next rotation redeems the new refresh token (a second
// redemption of the old one would make Hydra revoke the grant) and nobody
// has to authorize again.
func TestFaultVaultWriteFailsAfterRotation(t *testing.T) {
	// The access token the rotation issues outlives the write outage by
	// far, so no request needs the store.
	w, app, rotatedWrite := connectedRotating(t)
	first := w.tok.LastIssued()
	w.vhttp.Set(faultproxy.Fault{
		Match:  rotatedWrite,
		Status: http.StatusServiceUnavailable,
	})
	l := startLoad(t, 10, 90*time.Second, app)
	if !waitUntil(20*time.Second, func() bool { return w.tok.LastIssued() != first }) {
		t.Fatalf("no rotation; %s", w.tokenReport())
	}
	rotated := time.Now()
	if !waitUntil(5*time.Second, func() bool { return w.vhttp.Faulted("write") > 0 }) {
		t.Fatalf("the rotated token was not written to Vault within 5 s; %s", w.tokenReport())
	}
	time.Sleep(time.Until(rotated.Add(5 * time.Second)))
	w.vhttp.Clear()
	cleared := time.Now()
	failedWrites := w.vhttp.Faulted("write")

	if !waitUntil(15*time.Second, func() bool { rt := w.storedRT(t); return rt != "" && rt == w.tok.LastIssued() }) {
		outs := l.Stop()
		t.Fatalf("15 s after Vault came back it does not hold the last refresh token issued (holds one: %t); %d writes failed; requests: %s; %s",
			w.storedRT(t) != "", failedWrites, summary(outs), w.tokenReport())
	}
	w.checkChainAlive(t, l, cleared)
}

// TestFaultVaultWriteAnswerLostAfterRotation proves that a write Vault
// applied but whose answer never arrived does not cost the connection.
// Right after a rotation, Vault takes the token record's write but its
// answer is held past the client's time-out, so the proxy keeps the set
// pending; then Vault fails every write of the record until the next
// rotation, which the proxy makes from memory (the store holding, unknown
// to it, the refresh token that rotation spends). Once Vault takes writes
// again, the proxy must recognise its own lost write and put the newest
// set over it: otherwise Vault keeps a spent refresh token, the next
// refresh redeems it a second time, and Hydra revokes the grant.
func TestFaultVaultWriteAnswerLostAfterRotation(t *testing.T) {
	// The second rotation comes 10 s after the first, while the writes
	// fail.
	w, app, rotatedWrite := connectedRotating(t)
	w.vhttp.Set(faultproxy.Fault{ // the rotated set's write lands; its answer does not
		Match:         rotatedWrite,
		ResponseDelay: 8 * time.Second,
		Times:         1,
	})
	l := startLoad(t, 10, 90*time.Second, app)
	lost := func() bool {
		for _, e := range w.vhttp.Events() {
			if e.Kind == "write" && e.Forwarded && e.Canceled {
				return true
			}
		}
		return false
	}
	if !waitUntil(30*time.Second, lost) {
		outs := l.Stop()
		t.Fatalf("no write answer was lost (requests: %s); %s", summary(outs), w.tokenReport())
	}
	second := w.tok.LastIssued()
	if w.storedRT(t) != second {
		t.Fatal("Vault does not hold the token set whose answer was lost")
	}
	w.vhttp.Set(faultproxy.Fault{Match: faultproxy.KVWrite("secret", w.prefix+"/tokens/"), Status: http.StatusServiceUnavailable})
	if !waitUntil(20*time.Second, func() bool { return w.tok.LastIssued() != second }) {
		outs := l.Stop()
		t.Fatalf("no rotation from memory while Vault failed writes (requests: %s); %s", summary(outs), w.tokenReport())
	}
	time.Sleep(time.Second)
	w.vhttp.Clear()
	cleared := time.Now()

	if !waitUntil(15*time.Second, func() bool { rt := w.storedRT(t); return rt != "" && rt == w.tok.LastIssued() }) {
		outs := l.Stop()
		t.Fatalf("15 s after Vault took writes again it does not hold the last refresh token issued (it holds the one whose answer was lost: %t); requests: %s; %s",
			w.storedRT(t) == second, summary(outs), w.tokenReport())
	}
	w.checkChainAlive(t, l, cleared)
}

// checkChainAlive waits for one more rotation, from what memory and Vault
// hold once Vault came back (at cleared), then stops the load l and checks
// that every request succeeded, some after cleared, and that the refresh
// token chain is whole.
func (w *faultWorld) checkChainAlive(t *testing.T, l *load, cleared time.Time) {
	t.Helper()
	n := w.tok.Succeeded("refresh_token")
	ok := waitUntil(20*time.Second, func() bool { return w.tok.Succeeded("refresh_token") > n })
	outs := l.Stop()
	if !ok {
		t.Errorf("no further refresh after Vault came back; %s", w.tokenReport())
	}
	checkNoReauthorization(t, outs)
	if n, ex := failing(outs, func(o outcome) bool { return o.status != http.StatusOK }); n > 0 {
		t.Errorf("%d of %d requests failed (%s), e.g.\n\t%s", n, len(outs), summary(outs), ex)
	}
	if !l.okAfter(cleared) {
		t.Error("no request succeeded after Vault came back")
	}
	w.checkRotation(t, 1)
}

// TestFaultReloadFixesTheStore proves that a token set the store did not
// take is written through the configuration a reload brings. Right after a
// rotation, every write of the token record through the configured Vault
// address fails (503, as from a sealed node) and keeps failing; the
// operator reloads with a second address, the Vault itself. The pending set
// must reach Vault through the new configuration's store: the stopped
// configuration's store, with its one failing address, would never write
// it, and the connection would be lost at shutdown.
func TestFaultReloadFixesTheStore(t *testing.T) {
	w, app, rotatedWrite := connectedRotating(t)
	w.vhttp.Set(faultproxy.Fault{Match: rotatedWrite, Status: http.StatusServiceUnavailable})
	l := startLoad(t, 10, 60*time.Second, app)
	if !waitUntil(30*time.Second, func() bool { return w.vhttp.Faulted("write") > 0 }) {
		outs := l.Stop()
		t.Fatalf("no write of a rotated set failed (requests: %s); %s", summary(outs), w.tokenReport())
	}
	reload(t, w.caddyfile(sidecarConfig{addresses: testservices.Vault(t).Addr}))
	if !waitUntil(15*time.Second, func() bool { rt := w.storedRT(t); return rt != "" && rt == w.tok.LastIssued() }) {
		outs := l.Stop()
		t.Fatalf("15 s after the reload Vault does not hold the last refresh token issued; requests: %s; %s", summary(outs), w.tokenReport())
	}
	outs := l.Stop()
	checkNoReauthorization(t, outs)
	w.checkRotation(t, 1)
}

// connectedRotating starts the in-process sidecar on a world whose access
// tokens live 15 s (due 10 s in) and connects it. It returns the app's URL
// and a matcher of the token record's writes made once the token endpoint
// has rotated the first refresh token: a fault armed with it spares the
// lease, which is taken before the rotation.
func connectedRotating(t *testing.T) (w *faultWorld, app string, rotatedWrite func(*http.Request) bool) {
	t.Helper()
	w = newFaultWorld(t, "http://localhost:9080/oauth/callback", 15*time.Second)
	s := w.startSidecar(t, sidecarConfig{})
	connect(t, s, newBrowser())
	first := w.tok.LastIssued()
	tokenWrite := faultproxy.KVWrite("secret", w.prefix+"/tokens/")
	return w, s.base + "/demo/items", func(r *http.Request) bool { return tokenWrite(r) && w.tok.LastIssued() != first }
}
