package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/faultproxy"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
)

// TestFaultTokenEndpointDown proves how a token endpoint outage across the
// access token's expiry looks to apps and to the provider: requests are
// served while the token is valid, then answered 503 token_unavailable with
// Retry-After, never authorization_required and never after more than
// max_wait; the proxy backs off (a bounded number of token requests at 10
// requests a second, fewer still when the provider says Retry-After) and
// never sends one refresh token twice; once the endpoint is back, exactly
// one refresh succeeds and the connection works.
func TestFaultTokenEndpointDown(t *testing.T) {
	refresh := faultproxy.Grant("refresh_token")
	for _, tt := range []struct {
		name   string
		fault  faultproxy.Fault
		window time.Duration
		// most is how many token requests the outage may see: with a
		// backoff from 1 s doubling, 5 in 16 s; a little more for
		// jitter.
		most int
	}{
		{"503", faultproxy.Fault{Match: refresh, Status: http.StatusServiceUnavailable}, 16 * time.Second, 8},
		{"503 with Retry-After", faultproxy.Fault{Match: refresh, Status: http.StatusServiceUnavailable, RetryAfter: "10"}, 16 * time.Second, 3},
		{"hanging", faultproxy.Fault{Match: refresh, Hang: true}, 16 * time.Second, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newFaultWorld(t, "http://localhost:9080/oauth/callback", 0) // 6 s tokens
			s := w.startSidecar(t, sidecarConfig{connector: "max_wait 3s"})
			connect(t, s, newBrowser())
			app := s.base + "/demo/items"
			exp := w.storedExpiry(t) // whole seconds: up to 1 s early

			w.tok.Set(tt.fault)
			l := startLoad(t, 10, 2*time.Minute, app)
			time.Sleep(tt.window)
			during := w.tok.Count("refresh_token")
			w.tok.Clear()
			cleared := time.Now()
			ok := waitUntil(40*time.Second, func() bool { return l.okAfter(cleared) })
			time.Sleep(time.Second)
			succeeded := w.tok.Succeeded("refresh_token")
			outs := l.Stop()
			if !ok {
				t.Errorf("no request succeeded within 40 s of the token endpoint's recovery (%s); %s", summary(outs), w.tokenReport())
			}

			checkNoReauthorization(t, outs)
			checkUnavailable(t, outs, "token_unavailable")
			checkWaits(t, outs)
			if n, ex := failing(outs, func(o outcome) bool { return o.sent.Before(exp.Add(-validSlack)) && o.status != http.StatusOK }); n > 0 {
				t.Errorf("%d requests failed while the access token was valid, e.g.\n\t%s", n, ex)
			}
			// Sanity: with the token expired and no refresh possible,
			// nothing can be answered 200 before the endpoint is back.
			if n, _ := failing(outs, func(o outcome) bool {
				return o.sent.After(exp.Add(time.Second)) && o.sent.Add(o.took).Before(cleared) && o.status == http.StatusOK
			}); n > 0 {
				t.Errorf("%d requests were answered 200 during the outage after the access token expired", n)
			}
			if during > tt.most {
				t.Errorf("%d token requests during the %v outage, want at most %d: no backoff", during, tt.window, tt.most)
			}
			if succeeded != 1 {
				t.Errorf("%d successful refreshes by a second after recovery, want exactly 1; %s", succeeded, w.tokenReport())
			}
			w.checkRotation(t, 1)
		})
	}
}

// validSlack is how close to the stored expiry a request may be sent and
// still be judged after it: Vault holds the expiry to the second, and the
// proxy decides a moment after the test sent the request.
const validSlack = 250 * time.Millisecond

// TestFaultInvalidClient proves that a token endpoint rejecting the client
// (here: a reload configured a wrong client secret) is a misconfiguration,
// not a lost connection: the tokens stay in Vault, apps get 503
// connector_misconfigured with Retry-After once the cached token expires
// (never authorization_required), and a reload that fixes the secret
// brings the connection back without anybody authorizing again.
func TestFaultInvalidClient(t *testing.T) {
	w := newFaultWorld(t, "http://localhost:9080/oauth/callback", 0) // 6 s tokens
	good := sidecarConfig{}
	s := w.startSidecar(t, good)
	connect(t, s, newBrowser())
	app := s.base + "/demo/items"
	rt := w.storedRT(t)
	exp := w.storedExpiry(t)

	reload(t, w.caddyfile(sidecarConfig{secret: "wrong-" + hydradev.RandomHex(8)}))
	l := startLoad(t, 10, 2*time.Minute, app)
	time.Sleep(time.Until(exp.Add(5 * time.Second)))
	rejected := w.tok.Count("refresh_token")
	if w.storedRT(t) != rt {
		t.Errorf("Vault no longer holds the refresh token (holds one: %t) after the provider rejected the client", w.storedRT(t) != "")
	}

	// Requests sent while the fixing reload is under way may already be
	// served by the fixed configuration: the misconfigured window ends
	// when the reload starts.
	fixing := time.Now()
	reload(t, w.caddyfile(good))
	fixed := time.Now()
	ok := waitUntil(40*time.Second, func() bool { return l.okAfter(fixed) })
	outs := l.Stop()
	if rejected == 0 {
		t.Fatalf("no refresh was tried with the wrong secret; %s", w.tokenReport())
	}
	if !ok {
		t.Errorf("no request succeeded within 40 s of the fixing reload (%s); %s", summary(outs), w.tokenReport())
	}
	checkNoReauthorization(t, outs)
	var misconfigured []outcome
	for _, o := range outs {
		if o.sent.After(exp.Add(time.Second)) && o.sent.Add(o.took).Before(fixing) {
			misconfigured = append(misconfigured, o)
		}
	}
	checkUnavailable(t, misconfigured, "connector_misconfigured")
	if n, ex := failing(misconfigured, func(o outcome) bool { return o.status == http.StatusOK }); n > 0 {
		t.Errorf("%d requests were answered 200 after the token expired with a rejected client, e.g.\n\t%s", n, ex)
	}
	if n, ex := failing(outs, func(o outcome) bool { return o.sent.Before(exp.Add(-validSlack)) && o.status != http.StatusOK }); n > 0 {
		t.Errorf("%d requests failed while the access token was valid, e.g.\n\t%s", n, ex)
	}
	if got := w.tok.Count("authorization_code"); got != 1 {
		t.Errorf("%d authorizations: somebody had to reconnect", got)
	}
	if o := get(http.DefaultClient, app); o.status != http.StatusOK {
		t.Errorf("after the fix: %v", o)
	}
	if !waitUntil(10*time.Second, func() bool { return w.storedRT(t) == w.tok.LastIssued() }) {
		t.Errorf("Vault does not hold the last refresh token issued; %s", w.tokenReport())
	}
	t.Logf("%d token requests with the wrong secret", rejected)
}
