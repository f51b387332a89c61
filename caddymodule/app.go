// Package caddymodule plugs caddy-oauthconn into Caddy: the oauthconn app
// (connectors, the record store and the shared token cache), the
// oauthconn_connect handler that runs the authorization code grant, the
// oauthconn_proxy handler that sends apps' requests upstream with a fresh
// Bearer token, and their Caddyfile syntax. The protocol and token logic
// lives in the packages connector, flow and tokens, which do not import
// Caddy.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/ratelimit"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the oauthconn app: the connectors, where their tokens and pending
// authorizations are kept, and the in-memory token cache that the
// oauthconn_connect and oauthconn_proxy handlers share.
type App struct {
	// PublicURL is the URL at which browsers and apps reach this server,
	// such as https://connect.example.com. The default callback URL is
	// {public_url}{base_path}/callback. Placeholders such as {env.X} are
	// expanded.
	PublicURL string `json:"public_url,omitempty"`

	// BasePath is the path below which oauthconn_connect serves its
	// routes. Default: /oauth.
	BasePath string `json:"base_path,omitempty"`

	// StoreRaw is where tokens and pending authorizations are kept: a
	// module in the oauthconn.stores namespace. Default: the embedded
	// encrypted file store in Caddy's data directory.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=oauthconn.stores inline_key=module"`

	// Connectors are the OAuth 2.0 client registrations, by name.
	Connectors map[string]*Connector `json:"connectors,omitempty"`

	// User is the connectors' default for their user option: the
	// placeholder that names the authenticated user on the connect
	// routes. Default: {http.auth.user.id}.
	User string `json:"user,omitempty"`

	// FlowTTL is how long a started authorization may take before its
	// state expires. Default: 10m.
	FlowTTL caddy.Duration `json:"flow_ttl,omitempty"`

	// SweepInterval is how often expired authorization states are deleted
	// from the store. Default: 1m.
	SweepInterval caddy.Duration `json:"sweep_interval,omitempty"`

	// AllowedReturnOrigins are origins (such as https://app.example.com)
	// that an absolute return_to may point at. Same-site paths are always
	// allowed; anything else falls back to {base_path}/.
	AllowedReturnOrigins []string `json:"allowed_return_origins,omitempty"`

	// RateLimit limits how often one client address (an IPv6 network of
	// IPv6Prefix bits) may call the authorize and callback routes.
	// Default: 30 per minute, tracking at most 10000 clients.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// MaxPendingFlows caps the authorizations in flight per connector on
	// each instance. When it is reached, a new authorization displaces the
	// oldest pending one (which can then no longer finish) rather than
	// being refused, so abandoned authorizations cannot lock anyone out.
	// Default: 1000.
	MaxPendingFlows int `json:"max_pending_flows,omitempty"`

	// MaxPendingFlowsPerClient caps the authorizations in flight per
	// connector on each instance that one client holds: the authenticated
	// user when there is one ({http.auth.user.id}), else the client
	// address (an IPv6 network of IPv6Prefix bits). A new authorization
	// beyond it displaces that client's oldest, so a client flooding the
	// authorize route mostly displaces its own. Default: 3.
	MaxPendingFlowsPerClient int `json:"max_pending_flows_per_client,omitempty"`

	// IPv6Prefix is how many leading bits of an IPv6 client address name
	// one client, for the rate limit and MaxPendingFlowsPerClient: one
	// host usually holds a whole /64 and could otherwise get a new budget
	// from each address. IPv4 addresses count one by one. Default: 64;
	// 128 counts each IPv6 address.
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`

	// RequireStoreAtStart makes starting fail when the store cannot be
	// used (unreachable, sealed, or its credentials refused or lacking a
	// capability the proxy needs), checked for at most 5 seconds. By
	// default a failed check is logged as a warning and Caddy starts, so
	// that a store that comes up later is used as soon as it does.
	RequireStoreAtStart bool `json:"require_store_at_start,omitempty"`

	store      RecordStore
	rawStore   RecordStore
	health     *storeHealth
	storeFrom  string // where the Vault store's address came from
	telemetry  *telemetry
	returnTo   flow.ReturnTo
	limiter    *ratelimit.Limiter
	pending    *pendingFlows
	keeper     *tokens.Keeper
	flows      *flow.Flows
	public     *url.URL
	poolKey    string
	logger     *zap.Logger
	ctx        caddy.Context
	stopSweep  context.CancelFunc
	sweepDone  chan struct{}
	background *sync.WaitGroup // keep-alive passes, from Start to Stop
	// challenges are the claims challenges this configuration recorded
	// (cae.go).
	challenges *challengeMemo
	// releaseLock gives back this configuration's hold on the process's
	// instance lock (instance.go).
	releaseLock func()
}

// RateLimit is a per-client request budget.
type RateLimit struct {
	// Requests is how many requests a client may make per Window (also
	// the burst). Zero turns the limit off.
	Requests int `json:"requests"`
	// Window is the period Requests are counted over. Default: 1m.
	Window caddy.Duration `json:"window,omitempty"`
	// MaxClients bounds the client addresses tracked; the least recently
	// seen are forgotten first. Default: 10000.
	MaxClients int `json:"max_clients,omitempty"`
}

// RecordStore is a kv.Store that can name where it keeps its records.
type RecordStore interface {
	kv.Store
	// Location identifies the records, so that configurations pointing at
	// the same records share one token cache.
	Location() string
}

// StoreOpener is implemented by modules in the oauthconn.stores namespace.
type StoreOpener interface {
	// OpenStore returns the store. It must not contact the network.
	OpenStore() (RecordStore, error)
}

// caches holds token caches by store location, so cached tokens and
// in-flight refreshes survive config reloads.
var caches = caddy.NewUsagePool()

type pooledCache struct{ *tokens.Cache }

// drainTimeout bounds how long stopping Caddy waits for refreshed token sets
// that the store has not taken yet.
const drainTimeout = 10 * time.Second

// Destruct runs when no configuration uses the cache any more (Caddy
// stops, or a reload moves to another store): it waits, bounded, for the
// token sets still to be written. A reload that keeps the store keeps the
// cache, and its pending writes carry on.
func (c pooledCache) Destruct() error {
	if n := c.Close(drainTimeout); n > 0 {
		return fmt.Errorf("oauthconn: %d refreshed token sets were not written to the store before stopping; those connections need authorization again if the provider rotated their refresh tokens", n)
	}
	return nil
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "oauthconn",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the app. It reads files (the embedded store's key) but
// does not contact the network.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()

	a.PublicURL = strings.TrimRight(repl.ReplaceKnown(a.PublicURL, ""), "/")
	if a.PublicURL != "" {
		u, err := url.Parse(a.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("oauthconn: public_url %q must be an absolute http(s) URL", a.PublicURL)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("oauthconn: public_url %q must not have a query or fragment", a.PublicURL)
		}
		a.public = u
		if !connector.SecureOrLoopback(u) {
			return fmt.Errorf("oauthconn: public_url %q must be https: over plain http the flow cookie cannot be Secure and authorization codes travel in clear (http is allowed only for localhost)", a.PublicURL)
		}
	}
	for _, o := range a.AllowedReturnOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.TrimRight(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("oauthconn: allowed_return_origins: %q is not an origin such as https://app.example.com", o)
		}
		a.returnTo.AllowedOrigins = append(a.returnTo.AllowedOrigins, u.Scheme+"://"+u.Host)
	}
	rl := RateLimit{Requests: 30}
	if a.RateLimit != nil {
		rl = *a.RateLimit
	}
	if rl.Window == 0 {
		rl.Window = caddy.Duration(time.Minute)
	}
	if rl.MaxClients == 0 {
		rl.MaxClients = 10000
	}
	if rl.Requests > 0 {
		a.limiter = ratelimit.New(rl.Requests, time.Duration(rl.Window), rl.MaxClients)
	}
	if a.MaxPendingFlows == 0 {
		a.MaxPendingFlows = 1000
	}
	if a.MaxPendingFlowsPerClient == 0 {
		a.MaxPendingFlowsPerClient = 3
	}
	if a.MaxPendingFlows < 0 || a.MaxPendingFlowsPerClient < 0 {
		return fmt.Errorf("oauthconn: max_pending_flows and max_pending_flows_per_client must be positive")
	}
	a.pending = newPendingFlows(a.MaxPendingFlows, a.MaxPendingFlowsPerClient)
	if a.IPv6Prefix == 0 {
		a.IPv6Prefix = ratelimit.DefaultIPv6Prefix
	}
	if a.IPv6Prefix < 1 || a.IPv6Prefix > 128 {
		return fmt.Errorf("oauthconn: ipv6_prefix %d must be between 1 and 128", a.IPv6Prefix)
	}
	if a.BasePath == "" {
		a.BasePath = defaultBasePath
	}
	a.BasePath = "/" + strings.Trim(a.BasePath, "/")
	if a.FlowTTL == 0 {
		a.FlowTTL = caddy.Duration(flow.DefaultTTL)
	}
	if a.SweepInterval == 0 {
		a.SweepInterval = caddy.Duration(time.Minute)
	}

	// The store.
	var opener StoreOpener
	if a.StoreRaw != nil {
		mod, err := ctx.LoadModule(a, "StoreRaw")
		if err != nil {
			return fmt.Errorf("oauthconn: loading store: %w", err)
		}
		opener = mod.(StoreOpener)
	} else {
		opener = &FileStore{Path: filepath.Join(caddy.AppDataDir(), "oauthconn")}
	}
	store, err := opener.OpenStore()
	if err != nil {
		return fmt.Errorf("oauthconn: opening store: %w", err)
	}
	a.store = store
	a.rawStore = store
	a.health = newStoreHealth(func(ctx context.Context) error { return checkStore(ctx, a.rawStore) })
	a.storeFrom = storeOrigin(opener)

	// The token cache, shared with earlier configurations on this store.
	a.poolKey = store.Location()
	val, _, err := caches.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		return pooledCache{tokens.NewCache()}, nil
	})
	if err != nil {
		return err
	}
	cache := val.(pooledCache).Cache
	if a.telemetry, err = newTelemetry(ctx, cache); err != nil {
		return fmt.Errorf("oauthconn: metrics and events: %w", err)
	}
	a.telemetry.unconfigured = func(name string) bool {
		c := a.Connectors[name]
		return c == nil || c.unconfigured()
	}
	store = observedStore{RecordStore: store, t: a.telemetry}
	a.store = store
	a.keeper = tokens.NewKeeper(tokens.Options{
		Cache:    cache,
		Store:    store,
		Logger:   a.logger.Named("tokens"),
		Observer: a.telemetry,
	})
	a.flows = flow.New(store, time.Duration(a.FlowTTL), nil)
	a.challenges = new(challengeMemo)

	// The connectors.
	for name, c := range a.Connectors {
		if c == nil {
			return fmt.Errorf("oauthconn: connector %s: empty definition", name)
		}
		if err := c.provision(name, a, repl); err != nil {
			return fmt.Errorf("oauthconn: %w", err)
		}
	}
	return nil
}

// Validate checks the configuration; it is fast and makes no network calls.
func (a *App) Validate() error {
	for _, name := range a.connectorNames() {
		if c := a.Connectors[name]; !c.unconfigured() && c.authorizes() && a.public == nil && c.RedirectURI == "" {
			return fmt.Errorf("oauthconn: connector %s: public_url (or the connector's redirect_uri) is required", name)
		}
	}
	return nil
}

// Start takes the instance lock and starts the sweeper of expired
// authorization states and the keep-alive passes.
func (a *App) Start() (err error) {
	for _, name := range a.connectorNames() {
		if c := a.Connectors[name]; c.unconfigured() {
			a.logger.Warn("connector is unconfigured: client_id is empty; its routes answer 503 until it is set",
				zap.String("connector", name))
		}
	}
	release, err := lockInstance(caddy.AppDataDir())
	if err != nil {
		return fmt.Errorf("oauthconn: %w", err)
	}
	// Caddy does not stop an app whose Start failed.
	defer func() {
		if err != nil {
			release()
			a.releaseLock = nil
		}
	}()
	a.releaseLock = release
	a.logger.Info("oauthconn started", zap.String("store", a.store.Location()),
		zap.Int("connectors", len(a.Connectors)), zap.String("base_path", a.BasePath))
	ctx, cancel := context.WithCancel(a.ctx)
	a.stopSweep = cancel
	// A store that logs in (Vault AppRole, Kubernetes, token file) keeps
	// its credentials fresh until the app stops.
	if st, ok := a.rawStore.(interface {
		Start(context.Context, *zap.Logger, time.Duration) error
	}); ok {
		if err := st.Start(ctx, a.logger.Named("vault"), 5*time.Second); err != nil {
			cancel()
			return fmt.Errorf("oauthconn: store: %w", err)
		}
	}
	a.sweepDone = make(chan struct{})
	go a.sweep(ctx, time.Duration(a.SweepInterval))
	a.background = new(sync.WaitGroup)
	if err := a.checkStoreAtStart(ctx); err != nil {
		cancel()
		<-a.sweepDone
		return err
	}
	for _, name := range a.connectorNames() {
		if c := a.Connectors[name]; c.conn != nil && c.keepAlive > 0 {
			a.background.Add(1)
			go func() {
				defer a.background.Done()
				a.keeper.KeepAlive(ctx, c.name, c.conn, c.policy, c.keepAlive)
			}()
		}
	}
	// Token sets an earlier configuration could not write (its store's
	// credentials expired, say) are written through this one's store.
	a.keeper.TakeOverWrites()
	return nil
}

// Stop stops the sweeper and the keep-alive passes and waits for them.
// Refreshes in flight are not cancelled: they belong to the token cache,
// which outlives the configuration.
func (a *App) Stop() error {
	if a.stopSweep != nil {
		a.stopSweep()
		<-a.sweepDone
		a.background.Wait()
		// Started, so it took over the unsaved token sets' writes.
		a.keeper.ReleaseWrites()
	}
	if a.releaseLock != nil {
		a.releaseLock()
		a.releaseLock = nil
	}
	return nil
}

// Cleanup releases this configuration's hold on the shared token cache.
func (a *App) Cleanup() error {
	if a.poolKey != "" {
		_, err := caches.Delete(a.poolKey)
		return err
	}
	return nil
}

func (a *App) sweep(ctx context.Context, every time.Duration) {
	defer close(a.sweepDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.flows.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			a.logger.Warn("sweeping expired authorization states", zap.Error(err))
		}
		if n > 0 {
			a.logger.Debug("swept expired authorization states", zap.Int("deleted", n))
		}
	}
}

func (a *App) connectorNames() []string {
	names := make([]string, 0, len(a.Connectors))
	for n := range a.Connectors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// authorizeURL is where an app or person starts authorizing connector name.
func (a *App) authorizeURL(name string) string {
	return a.PublicURL + a.BasePath + "/connectors/" + url.PathEscape(name) + "/authorize"
}

// origin is the public URL's origin, where the connect page's forms come
// from.
func (a *App) origin() string {
	if a.public == nil {
		return ""
	}
	return a.public.Scheme + "://" + a.public.Host
}

// clientKey names the client of a request for the rate limit: its address,
// an IPv6 address by its network.
func (a *App) clientKey(r *http.Request) string {
	return ratelimit.ClientKey(clientIP(r), a.IPv6Prefix)
}

// flowClient names who holds a pending authorization, for
// MaxPendingFlowsPerClient: the authenticated user if any, else the client
// address.
func (a *App) flowClient(r *http.Request, c *Connector) string {
	if id := a.userOf(r, c); id != "" {
		return "user " + id
	}
	return "address " + a.clientKey(r)
}

// flowCookies describes the flow cookies: Secure (and __Host-) with an
// https public URL, else scoped to the base path, where authorizations
// start and finish.
func (a *App) flowCookies() flow.Cookie {
	return flow.Cookie{
		Secure: a.public != nil && a.public.Scheme == "https",
		Path:   a.BasePath,
		TTL:    a.flows.TTL(),
	}
}

// appFrom gets the oauthconn app for a handler.
func appFrom(ctx caddy.Context) (*App, error) {
	v, err := ctx.App("oauthconn")
	if err != nil {
		return nil, fmt.Errorf("getting oauthconn app: %w", err)
	}
	return v.(*App), nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
