package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	dto "github.com/prometheus/client_model/go"
)

// gather returns the running configuration's metrics whose name starts
// with prefix, by name.
func gather(t *testing.T, prefix string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx := caddy.ActiveContext()
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), prefix) {
			out[f.GetName()] = f
		}
	}
	return out
}

// value returns the value of the series of family f with the given labels.
func value(f *dto.MetricFamily, labels map[string]string) (float64, bool) {
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if match {
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsSurviveReloads: the series are Caddy's (caddy_oauthconn_*),
// counters keep counting across a reload, and a cached connection of a
// connector that has become unconfigured is reported as such.
func TestMetricsSurviveReloads(t *testing.T) {
	s := startServer(t, testOptions{})
	s.connect(t, newClient())
	if resp, _ := newClient().do(t, "GET", s.base+"/demo/x", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("proxied: %d", resp.StatusCode)
	}
	if old := gather(t, "oauthconn_"); len(old) != 0 {
		t.Fatalf("series under the old names: %v", old)
	}
	before := gather(t, "caddy_oauthconn_")
	completed := map[string]string{"connector": "demo", "outcome": "completed"}
	n, ok := value(before["caddy_oauthconn_authorizations_total"], completed)
	if !ok || n < 1 {
		t.Fatalf("caddy_oauthconn_authorizations_total: %v %v (have %v)", n, ok, before)
	}
	if v, ok := value(before["caddy_oauthconn_connections"], map[string]string{"connector": "demo", "status": "connected"}); !ok || v != 1 {
		t.Fatalf("connections connected: %v %v: %v", v, ok, keys(before))
	}

	// The same store, the connector without its client.
	s.load(t, strings.Replace(s.src, "client_id demo-client", "client_id {env.OAUTHCONN_TEST_UNSET}", 1))
	after := gather(t, "caddy_oauthconn_")
	if m, _ := value(after["caddy_oauthconn_authorizations_total"], completed); m != n {
		t.Fatalf("after a reload: %v completed authorizations, before %v", m, n)
	}
	if v, ok := value(after["caddy_oauthconn_connections"], map[string]string{"connector": "demo", "status": "unconfigured"}); !ok || v != 1 {
		t.Fatalf("connections of the unconfigured connector: %v %v (%v)", v, ok, after["caddy_oauthconn_connections"])
	}
}

func keys(m map[string]*dto.MetricFamily) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
