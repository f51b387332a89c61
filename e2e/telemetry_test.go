package e2e

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is an events handler module for the tests: it keeps every
// oauthconn event it is given.
type eventRecorder struct{}

var (
	recordedMu sync.Mutex
	recorded   []caddy.Event
)

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.oauthconn_test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	if strings.HasPrefix(e.Name(), "oauthconn.") {
		recordedMu.Lock()
		recorded = append(recorded, e)
		recordedMu.Unlock()
	}
	return nil
}

func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func eventsNamed(name string) []caddy.Event {
	recordedMu.Lock()
	defer recordedMu.Unlock()
	var out []caddy.Event
	for _, e := range recorded {
		if e.Name() == name {
			out = append(out, e)
		}
	}
	return out
}

func scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// seriesValue returns the value of series in the scraped metrics m, 0 if absent.
func seriesValue(m, series string) float64 {
	for line := range strings.Lines(m) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// TestMetricsAndEvents: a flow, a refresh and a disconnect show in Caddy's
// /metrics and reach a subscriber of Caddy's events.
func TestMetricsAndEvents(t *testing.T) {
	f := newFixtureWith(t, "client_secret_basic", sidecarOptions{options: "events {\n\t\ton * oauthconn_test_recorder\n\t}"})
	// The counters belong to the process and outlive configurations, so
	// earlier tests' counts are there too: compare with them.
	before := scrape(t)
	connect(t, f.s, newBrowser())
	if ev := eventsNamed("oauthconn.connected"); len(ev) != 1 || ev[0].Data["connector"] != "demo" {
		t.Fatalf("connected events: %v", ev)
	}
	exp, _ := time.Parse(time.RFC3339, f.s.stored(t, "demo")["expiry"].(string))
	time.Sleep(time.Until(exp.Add(time.Second)))
	app := newBrowser()
	if resp, _ := app.do(t, "GET", f.s.base+"/demo/items", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("after expiry: %d", resp.StatusCode)
	}
	if ev := eventsNamed("oauthconn.refreshed"); len(ev) != 1 || ev[0].Data["trigger"] != "proactive" {
		t.Fatalf("refreshed events: %v", ev)
	}
	m := scrape(t)
	for _, counter := range []string{
		`caddy_oauthconn_authorizations_total{connector="demo",outcome="started"}`,
		`caddy_oauthconn_authorizations_total{connector="demo",outcome="completed"}`,
		`caddy_oauthconn_refreshes_total{connector="demo",outcome="ok",trigger="proactive"}`,
	} {
		if d := seriesValue(m, counter) - seriesValue(before, counter); d != 1 {
			t.Errorf("%s grew by %v, want 1", counter, d)
		}
	}
	for _, want := range []string{
		`caddy_oauthconn_connections{connector="demo",status="connected"} 1`,
		`caddy_oauthconn_store_request_duration_seconds_count{op="get"}`,
		`caddy_oauthconn_token_expiry_seconds{connector="demo"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if resp, _ := app.do(t, "DELETE", f.s.base+"/oauth/connectors/demo", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %d", resp.StatusCode)
	}
	// The fixture's connector has no revocation URL: the event says so.
	if ev := eventsNamed("oauthconn.disconnected"); len(ev) != 1 || ev[0].Data["revoked"] != false || ev[0].Data["revocation"] != "no_revocation_url" {
		t.Fatalf("disconnected events: %v", ev)
	}
}
