package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// telemetry is the app's Prometheus metrics (in Caddy's registry, served on
// its /metrics) and Caddy events. Metric labels are the connector and an
// outcome, never a subject or anything secret; events carry the connector
// and the subject.
type telemetry struct {
	ctx    caddy.Context
	events *caddyevents.App
	cache  *tokens.Cache

	authorizations *prometheus.CounterVec
	refreshes      *prometheus.CounterVec
	retries        *prometheus.CounterVec
	storeLatency   *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec
	connections    *prometheus.Desc
	unsaved        *prometheus.Desc
	expiry         *prometheus.Desc

	// unconfigured reports whether a connector of this configuration has
	// no client (nil until the app sets it).
	unconfigured func(connector string) bool
}

// Event names, for Caddy's events app (events { on oauthconn.connected … }).
const (
	eventConnected             = "oauthconn.connected"
	eventRefreshed             = "oauthconn.refreshed"
	eventRefreshFailed         = "oauthconn.refresh_failed"
	eventAuthorizationRequired = "oauthconn.authorization_required"
	eventDisconnected          = "oauthconn.disconnected"
	eventMisconfigured         = "oauthconn.connector_misconfigured"
)

// Metric names: caddy_oauthconn_*, as Caddy's own metrics are caddy_http_*
// and caddy_admin_*.
const (
	metricsNamespace = "caddy"
	metricsSubsystem = "oauthconn"
)

// metrics are the counters and histograms, created once per process:
// each configuration registers the same collectors in its own registry,
// so that their values survive reloads (a new collector per configuration
// would start again from zero at each reload).
var metrics struct {
	once           sync.Once
	authorizations *prometheus.CounterVec
	refreshes      *prometheus.CounterVec
	retries        *prometheus.CounterVec
	storeLatency   *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec
}

func initMetrics() {
	const ns, sub = metricsNamespace, metricsSubsystem
	metrics.authorizations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "authorizations_total",
		Help: "Authorization code flows by outcome: started, completed, or the reason they failed."}, []string{"connector", "outcome"})
	metrics.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refreshes_total",
		Help: "Token refreshes by what triggered them (proactive, 401, admin, keepalive, scoped: a token for a proxy's scopes) and outcome (ok: stored; invalid_grant; misconfigured: the client is refused; transient)."}, []string{"connector", "trigger", "outcome"})
	metrics.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "upstream_401_total",
		Help: "Upstream 401 answers by outcome: retried, passed_through, authorization_required, claims_challenge."}, []string{"connector", "outcome"})
	metrics.storeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "store_request_duration_seconds",
		Help: "Latency of requests to the token store.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"op"})
	metrics.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "store_errors_total",
		Help: "Token store requests that failed (not counting not-found and check-and-set conflicts)."}, []string{"op"})
}

// register adds c to reg, or, if an equal collector is there already,
// returns that one.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &are):
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
		return c, nil
	default:
		return c, err
	}
}

func newTelemetry(ctx caddy.Context, cache *tokens.Cache) (*telemetry, error) {
	t := &telemetry{ctx: ctx, cache: cache}
	ev, err := ctx.App("events")
	if err != nil {
		return nil, err
	}
	t.events = ev.(*caddyevents.App)
	metrics.once.Do(initMetrics)
	name := func(n string) string { return prometheus.BuildFQName(metricsNamespace, metricsSubsystem, n) }
	t.connections = prometheus.NewDesc(name("connections"), "Connections in this instance's cache by status (connected, authorization_required, or unconfigured: the connector has no client now).", []string{"connector", "status"}, nil)
	t.unsaved = prometheus.NewDesc(name("unsaved_connections"), "Connections whose refreshed token set this instance holds but the store has not taken yet (being retried).", []string{"connector"}, nil)
	t.expiry = prometheus.NewDesc(name("token_expiry_seconds"), "Seconds until the cached access token of a shared connection expires.", []string{"connector"}, nil)
	reg := ctx.GetMetricsRegistry()
	if t.authorizations, err = register(reg, metrics.authorizations); err != nil {
		return nil, err
	}
	if t.refreshes, err = register(reg, metrics.refreshes); err != nil {
		return nil, err
	}
	if t.retries, err = register(reg, metrics.retries); err != nil {
		return nil, err
	}
	if t.storeLatency, err = register(reg, metrics.storeLatency); err != nil {
		return nil, err
	}
	if t.storeErrors, err = register(reg, metrics.storeErrors); err != nil {
		return nil, err
	}
	// The cache gauges are this configuration's own collector: they
	// read its connectors.
	if _, err := register[prometheus.Collector](reg, t); err != nil {
		return nil, err
	}
	return t, nil
}

// Describe implements prometheus.Collector for the cache gauges.
func (t *telemetry) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.connections
	ch <- t.unsaved
	ch <- t.expiry
}

// Collect implements prometheus.Collector for the cache gauges.
func (t *telemetry) Collect(ch chan<- prometheus.Metric) {
	type cs struct{ connector, status string }
	counts := map[cs]int{}
	unsaved := map[string]int{}
	now := time.Now()
	t.cache.Each(func(s tokens.ConnectionState) {
		if s.Unsaved {
			unsaved[s.Key.Connector]++
		}
		status := "authorization_required"
		switch {
		case t.unconfigured != nil && t.unconfigured(s.Key.Connector):
			// Cached under an earlier configuration: its tokens are
			// not used now.
			status = "unconfigured"
		case s.Connected:
			status = "connected"
		}
		counts[cs{s.Key.Connector, status}]++
		if s.Key.Subject == "" && s.Connected && !s.Expiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(t.expiry, prometheus.GaugeValue, s.Expiry.Sub(now).Seconds(), s.Key.Connector)
		}
	})
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(t.connections, prometheus.GaugeValue, float64(n), k.connector, k.status)
	}
	for c, n := range unsaved {
		ch <- prometheus.MustNewConstMetric(t.unsaved, prometheus.GaugeValue, float64(n), c)
	}
}

func (t *telemetry) emit(name string, key tokens.Key, extra map[string]any) {
	data := map[string]any{"connector": key.Connector, "subject": key.Subject}
	for k, v := range extra {
		data[k] = v
	}
	t.events.Emit(t.ctx, name, data)
}

// Refreshed implements tokens.Observer.
func (t *telemetry) Refreshed(key tokens.Key, trigger, outcome string) {
	t.refreshes.WithLabelValues(key.Connector, trigger, outcome).Inc()
	switch outcome {
	case "ok":
		t.emit(eventRefreshed, key, map[string]any{"trigger": trigger})
	case "invalid_grant":
		t.emit(eventRefreshFailed, key, map[string]any{"trigger": trigger, "outcome": outcome})
		t.emit(eventAuthorizationRequired, key, nil)
	case "misconfigured":
		t.emit(eventRefreshFailed, key, map[string]any{"trigger": trigger, "outcome": outcome})
		t.emit(eventMisconfigured, key, nil)
	default:
		t.emit(eventRefreshFailed, key, map[string]any{"trigger": trigger, "outcome": outcome})
	}
}

func (t *telemetry) authorization(connector, outcome string) {
	t.authorizations.WithLabelValues(connector, outcome).Inc()
}

// observedStore times every store request and counts its failures.
type observedStore struct {
	RecordStore
	t *telemetry
}

func (s observedStore) observe(op string, start time.Time, err error) {
	s.t.storeLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, kv.ErrNotFound) && !errors.Is(err, kv.ErrConflict) {
		s.t.storeErrors.WithLabelValues(op).Inc()
	}
}

func (s observedStore) Get(ctx context.Context, p string) (kv.Entry, error) {
	start := time.Now()
	e, err := s.RecordStore.Get(ctx, p)
	s.observe("get", start, err)
	return e, err
}

func (s observedStore) Put(ctx context.Context, p string, d map[string]string, cas int) (int, error) {
	start := time.Now()
	v, err := s.RecordStore.Put(ctx, p, d, cas)
	s.observe("put", start, err)
	return v, err
}

func (s observedStore) Delete(ctx context.Context, p string) error {
	start := time.Now()
	err := s.RecordStore.Delete(ctx, p)
	s.observe("delete", start, err)
	return err
}

func (s observedStore) List(ctx context.Context, dir string) ([]string, error) {
	start := time.Now()
	names, err := s.RecordStore.List(ctx, dir)
	s.observe("list", start, err)
	return names, err
}

// Interface guards.
var (
	_ tokens.Observer      = (*telemetry)(nil)
	_ prometheus.Collector = (*telemetry)(nil)
	_ RecordStore          = observedStore{}
)
