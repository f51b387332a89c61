package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's Chromium; CI installs it. Without it the test is
// skipped, or fails where services are required.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("OAUTHCONN_REQUIRE_SERVICES") != "" {
		t.Fatal("chromium is not installed; .ci/run installs it")
	}
	t.Skip("chromium is not installed")
	return ""
}

// artefacts is where the browser test saves its screenshot.
func artefacts(t *testing.T) string {
	dir := os.Getenv("OAUTHCONN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConnectPageInBrowser drives the connect page in headless Chromium:
// Connect opens Hydra in a popup, the login and consent go through, the
// popup's success page notifies the page, which shows "connected" without a
// reload; Disconnect takes it away again.
func TestConnectPageInBrowser(t *testing.T) {
	ctx := headless(t, chromedp.WindowSize(1100, 700))
	f := newFixture(t, "client_secret_basic")
	connectOnPage(t, ctx, f.s.base)
	pageURL, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	live, err := chromedp.Run(ctx, chromedp.Text("#live"))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if pageURL != f.s.base+"/oauth/" {
		t.Fatalf("the page navigated to %s; it should update in place", pageURL)
	}
	if !strings.Contains(live, "demo is connected") {
		t.Fatalf("live region says %q", live)
	}
	if f.s.stored(t, "demo") == nil {
		t.Fatal("no token in Vault after connecting in the browser")
	}
	if err := os.WriteFile(filepath.Join(artefacts(t), "connect-page-connected.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`button[data-action="disconnect"]`)); err != nil {
		t.Fatal(err)
	}
	if err := waitStatus(ctx, "authorization_required"); err != nil {
		t.Fatalf("disconnecting in the browser: %v", err)
	}
	if f.s.stored(t, "demo") != nil {
		t.Fatal("the token is still in Vault after Disconnect")
	}
}

// headless starts a headless Chromium for the test and returns a context
// that drives it, bounded to a minute. extra options come after the
// defaults (popups allowed, no background traffic).
func headless(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-popup-blocking", false), chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// connectOnPage opens the connect page at base, checks that it shows demo
// as needing authorization, clicks Connect and waits until the page shows
// it connected (the popup's flow done).
func connectOnPage(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/oauth/")); err != nil {
		t.Fatal(err)
	}
	if err := waitStatus(ctx, "authorization_required"); err != nil {
		t.Fatalf("the page does not show the connector: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`a[data-action="connect"]`)); err != nil {
		t.Fatal(err)
	}
	if err := waitStatus(ctx, "connected"); err != nil {
		t.Fatalf("the page never showed connected: %v", err)
	}
}

// waitStatus waits until the connect page shows demo's status as want.
func waitStatus(ctx context.Context, want string) error {
	const status = `document.querySelector('tr[data-connector="demo"] [data-field="status"]').textContent`
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](status+` === "`+want+`"`, chromedp.WithPollingTimeout(20*time.Second)))
	return err
}
