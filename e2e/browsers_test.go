package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/chromedp/chromedp"
)

// TestBrowsersDoNotGetTheConnection drives a real browser: a page on
// another site that the operator visits tries every way of calling the
// proxy (a simple POST, a CORS GET, a preflighted PUT, an image), and none
// reaches the upstream; a page of an allow_browsers origin calls it with
// CORS, answered by the proxy, and reads the response.
func TestBrowsersDoNotGetTheConnection(t *testing.T) {
	ctx := headless(t)
	f := newFixture(t, "client_secret_basic")
	connect(t, f.s, newBrowser())

	page := func(script string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<!doctype html><title>loading</title><script>const proxy = %q;\n%s</script>", f.s.base+"/demo", script)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	evil := page(`
		const settle = p => p.then(r => "status " + r.status, e => "error");
		const img = new Promise(done => { const i = new Image(); i.onload = i.onerror = () => done("image"); i.src = proxy + "/image"; });
		Promise.all([
			settle(fetch(proxy + "/simple-post", {method: "POST", mode: "no-cors", body: "x"})),
			settle(fetch(proxy + "/cors-get")),
			settle(fetch(proxy + "/preflighted", {method: "PUT", headers: {"Content-Type": "application/json"}, body: "{}"})),
			img,
		]).then(r => { document.title = "done " + r.join(", "); });`)
	app := page(`
		fetch(proxy + "/from-app", {method: "PUT", headers: {"Content-Type": "application/json", "X-Trace": "1"}, body: "{\"a\":1}"})
			.then(r => r.json()).then(j => { document.title = "ok " + j.method + " " + j.path; }, e => { document.title = "failed " + e; });`)

	// The proxy lets the app's origin in.
	cfg := sidecarCaddyfile(f.s.prefix, f.h.PublicURL, f.counter.URL, f.c, f.up.URL, sidecarOptions{authStyle: "basic"})
	if !strings.Contains(cfg, "replay_limit 64KiB") {
		t.Fatal("the fixture's Caddyfile changed; update this test")
	}
	caddytest.NewTester(t).InitServer(strings.Replace(cfg, "replay_limit 64KiB", "replay_limit 64KiB\n\t\t\tallow_browsers "+app.URL, 1), "caddyfile")

	title := func(u, prefix string) string {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.title.startsWith("`+prefix+`")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("the page at %s did not finish: %v", u, err)
		}
		s, err := chromedp.Run(ctx, chromedp.Title())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	calls := f.up.Calls()
	got := title(evil.URL, "done")
	time.Sleep(500 * time.Millisecond)
	if n := f.up.Calls() - calls; n != 0 {
		t.Fatalf("another site's page reached the upstream %d times (%s): %v", n, got, f.up.Seen()[calls:])
	}
	t.Logf("the other site's page saw: %s", got)

	calls = f.up.Calls()
	if got := title(app.URL, "ok"); got != "ok PUT /from-app" {
		t.Fatalf("the allowed page saw %q", got)
	}
	if n := f.up.Calls() - calls; n != 1 {
		t.Fatalf("the allowed page's request reached the upstream %d times; want once (no preflight)", n)
	}
	if last := f.up.last(t); !last.Active || last.Header.Get("Origin") != app.URL {
		t.Fatalf("upstream saw %+v", last)
	}
}
