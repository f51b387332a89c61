package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
)

// TestFaultReloadUnderLoad proves that config reloads are invisible to apps
// and to the token chain: five reloads under 10 requests a second fail no
// request and cause no refresh beyond the one that falls due, and the
// reload that lands while that refresh is in flight (the provider has
// rotated the refresh token; its answer is held back 2 s) does not lose
// it: the refresh completes and its tokens are stored.
func TestFaultReloadUnderLoad(t *testing.T) {
	// Tokens of 15 s: one refresh due 10 s in, with a margin of 5 s that
	// absorbs the 2 s the answer is held.
	w := newFaultWorld(t, "http://localhost:9080/oauth/callback", 15*time.Second)
	cfg := sidecarConfig{}
	s := w.startSidecar(t, cfg)
	connect(t, s, newBrowser())
	app := s.base + "/demo/items"
	caddyfile := w.caddyfile(cfg)

	w.tok.Set(faultproxy.Fault{Match: faultproxy.Grant("refresh_token"), ResponseDelay: 2 * time.Second, Times: 1})
	l := startLoad(t, 10, time.Minute, app)
	for range 3 {
		time.Sleep(1500 * time.Millisecond)
		reload(t, caddyfile)
	}
	if !waitUntil(15*time.Second, func() bool { return w.tok.InFlight("refresh_token") > 0 }) {
		t.Fatalf("no refresh started; %s", w.tokenReport())
	}
	reload(t, caddyfile) // while the refresh's answer is held back
	waitUntil(5*time.Second, func() bool { return w.tok.InFlight("refresh_token") == 0 })
	time.Sleep(time.Second)
	reload(t, caddyfile)
	time.Sleep(2 * time.Second)
	outs := l.Stop()

	checkNoReauthorization(t, outs)
	if n, ex := failing(outs, func(o outcome) bool { return o.status != http.StatusOK }); n > 0 {
		t.Errorf("%d of %d requests failed across 5 reloads (%s), e.g.\n\t%s", n, len(outs), summary(outs), ex)
	}
	if got := w.tok.Count("refresh_token"); got != 1 || w.tok.Succeeded("refresh_token") != 1 {
		t.Errorf("refreshes: %s; want exactly one, successful", w.tokenReport())
	}
	w.checkRotation(t, 1)
	if o := get(http.DefaultClient, app); o.status != http.StatusOK {
		t.Errorf("after the reloads: %v", o)
	}
}
