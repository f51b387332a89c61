package e2e

import (
	"context"
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
	exe := chromium(t)
	f := newFixture(t, "client_secret_basic")
	cfg := sidecarCaddyfile(f.s.prefix, f.h.PublicURL, f.counter.URL, f.c, f.up.URL, sidecarOptions{
		authStyle: "basic", connector: "redirect_uri http://localhost:9080/oauth/callback",
	})
	if !strings.Contains(cfg, "public_url http://localhost:9080") {
		t.Fatal("the fixture's Caddyfile changed; update this test")
	}
	caddytest.NewTester(t).InitServer(strings.Replace(cfg, "public_url http://localhost:9080", "", 1), "caddyfile")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-popup-blocking", false), chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	status := `document.querySelector('tr[data-connector="demo"] [data-field="status"]').textContent`
	waitStatus := func(want string) error {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](status+` === "`+want+`"`, chromedp.WithPollingTimeout(20*time.Second)))
		return err
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(f.s.base+"/oauth/")); err != nil {
		t.Fatal(err)
	}
	if err := waitStatus("authorization_required"); err != nil {
		t.Fatalf("the page does not show the connector: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`a[data-action="connect"]`)); err != nil {
		t.Fatal(err)
	}
	if err := waitStatus("connected"); err != nil {
		t.Fatalf("the page never showed connected: %v", err)
	}
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
