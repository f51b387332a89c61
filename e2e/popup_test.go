package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/chromedp/chromedp"
)

// TestPopupWithoutPublicURL: with no public_url (the connector's
// redirect_uri given instead), the popup's success page still tells the
// connect page, which shows the connection, and closes.
func TestPopupWithoutPublicURL(t *testing.T) {
	ctx := headless(t)
	f := newFixture(t, "client_secret_basic")
	cfg := sidecarCaddyfile(f.s.prefix, f.h.PublicURL, f.counter.URL, f.c, f.up.URL, sidecarOptions{
		authStyle: "basic", connector: "redirect_uri http://localhost:9080/oauth/callback",
	})
	if !strings.Contains(cfg, "public_url http://localhost:9080") {
		t.Fatal("the fixture's Caddyfile changed; update this test")
	}
	caddytest.NewTester(t).InitServer(strings.Replace(cfg, "public_url http://localhost:9080", "", 1), "caddyfile")

	connectOnPage(t, ctx, f.s.base)
	deadline := time.Now().Add(10 * time.Second)
	for {
		targets, err := chromedp.Targets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages := 0
		for _, tg := range targets {
			if tg.Type == "page" {
				pages++
			}
		}
		if pages == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pages are open; the popup did not close", pages)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if f.s.stored(t, "demo") == nil {
		t.Fatal("no token in Vault after connecting in the browser")
	}
}
