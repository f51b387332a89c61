package caddymodule

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("oauthconn", parseGlobalOption)
	httpcaddyfile.RegisterDirective("oauthconn_connect", parseConnect)
	httpcaddyfile.RegisterHandlerDirective("oauthconn_proxy", parseProxy)
	httpcaddyfile.RegisterDirectiveOrder("oauthconn_connect", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("oauthconn_proxy", httpcaddyfile.After, "reverse_proxy")
}

func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the oauthconn global option may be given only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "oauthconn", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the oauthconn global option:
//
//	oauthconn {
//		public_url     <url>
//		base_path      <path>
//		flow_ttl       <duration>
//		sweep_interval <duration>
//		allowed_return_origins <origin...>
//		rate_limit     <requests> <window> [<max_clients>] | off
//		ipv6_prefix    <bits>
//		max_pending_flows <n>
//		max_pending_flows_per_client <n>
//		require_store_at_start [true|false]
//		store vault {
//			address   <url>
//			token     <token>
//			mount     <path>
//			prefix    <path>
//			namespace <namespace>
//		}
//		store file {
//			path     <directory>
//			key      <base64 key>
//			key_file <path>
//		}
//		connector <name> {
//			provider            <preset>
//			tenant              <tenant>
//			domain              login|test|<my domain host>
//			token_kind          user|bot
//			issuer              <issuer URL>
//			revocation_url      <url>
//			subject             <placeholder template>
//			authorization_url   <url>
//			token_url           <url>
//			client_id           <id>
//			client_secret       <secret>
//			scopes              <scope...>
//			auth_style          basic|post|private_key_jwt|client_assertion
//			client_key          file <path> | vault_transit <key> [<mount>]
//			client_key_id       <kid>
//			client_cert_file    <path>
//			assertion_audience  <url>
//			client_assertion_file <path>
//			redirect_uri        <url>
//			pkce                on|off
//			refresh_margin      <duration>
//			refresh_cooldown    <duration>
//			max_wait            <duration>
//			max_concurrent_refreshes <n>
//			max_waiting         <n>
//			revalidate_interval <duration>|off
//			keepalive           <duration>|off
//			authorization_param <name> <value>
//			token_header        <name> <value>
//			resource            <url>
//			registration        dynamic|metadata_document|static
//			cae                 on|off
//			metadata            <token response field...>
//			callback_metadata   <callback query parameter...>
//			metadata_discovery  <url> <name> <JSON path> [<name> <JSON path>...]
//			allowed_hosts       <host[:port|:*] pattern...>
//			grant               authorization_code|client_credentials|on_behalf_of|token_exchange
//			audience            <uri>
//			exchange_resource   <uri>
//			requested_token_type <uri>
//			exchange_cache_size <n>
//		}
//	}
//
// connector may be repeated, with distinct names. Values may use
// placeholders such as {env.CLIENT_SECRET}.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "public_url":
			if err := oneArg(d, &a.PublicURL); err != nil {
				return err
			}
		case "base_path":
			if err := oneArg(d, &a.BasePath); err != nil {
				return err
			}
			if !strings.HasPrefix(a.BasePath, "/") {
				return d.Errf("base_path %q must start with /", a.BasePath)
			}
		case "user":
			if err := oneArg(d, &a.User); err != nil {
				return err
			}
		case "flow_ttl":
			if err := durationArg(d, &a.FlowTTL); err != nil {
				return err
			}
		case "sweep_interval":
			if err := durationArg(d, &a.SweepInterval); err != nil {
				return err
			}
		case "allowed_return_origins":
			a.AllowedReturnOrigins = append(a.AllowedReturnOrigins, d.RemainingArgs()...)
			if len(a.AllowedReturnOrigins) == 0 {
				return d.ArgErr()
			}
		case "rate_limit":
			args := d.RemainingArgs()
			if len(args) == 1 && args[0] == "off" {
				a.RateLimit = &RateLimit{Requests: 0}
				break
			}
			if len(args) < 2 || len(args) > 3 {
				return d.Err("rate_limit takes <requests> <window> [<max_clients>], or off")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("rate_limit: requests %q must be a positive number", args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil || w <= 0 {
				return d.Errf("rate_limit: bad window %q", args[1])
			}
			a.RateLimit = &RateLimit{Requests: n, Window: caddy.Duration(w)}
			if len(args) == 3 {
				if a.RateLimit.MaxClients, err = strconv.Atoi(args[2]); err != nil || a.RateLimit.MaxClients <= 0 {
					return d.Errf("rate_limit: max_clients %q must be a positive number", args[2])
				}
			}
		case "max_pending_flows", "max_pending_flows_per_client", "ipv6_prefix":
			opt := d.Val()
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("%s %q must be a positive number", opt, s)
			}
			switch opt {
			case "max_pending_flows":
				a.MaxPendingFlows = n
			case "max_pending_flows_per_client":
				a.MaxPendingFlowsPerClient = n
			default:
				if n > 128 {
					return d.Errf("ipv6_prefix %d must be at most 128", n)
				}
				a.IPv6Prefix = n
			}
		case "require_store_at_start":
			// Bare, it turns the check on: that is why one writes it.
			a.RequireStoreAtStart = true
			if d.NextArg() {
				v, err := strconv.ParseBool(d.Val())
				if err != nil {
					return d.Errf("require_store_at_start must be true or false, got %q", d.Val())
				}
				a.RequireStoreAtStart = v
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "store":
			if a.StoreRaw != nil {
				return d.Err("store may be given only once")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			mod, err := caddyfile.UnmarshalModule(d, "oauthconn.stores."+name)
			if err != nil {
				return d.Errf("store %s: %v", name, err)
			}
			a.StoreRaw = caddyconfig.JSONModuleObject(mod, "module", name, nil)
		case "connector":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if _, dup := a.Connectors[name]; dup {
				return d.Errf("connector %s is defined twice", name)
			}
			c := new(Connector)
			if err := c.unmarshalCaddyfile(d, name); err != nil {
				return err
			}
			if a.Connectors == nil {
				a.Connectors = map[string]*Connector{}
			}
			a.Connectors[name] = c
		default:
			return d.Errf("unrecognized oauthconn option %q", d.Val())
		}
	}
	return nil
}

func (c *Connector) unmarshalCaddyfile(d *caddyfile.Dispenser, name string) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "provider":
			err = oneArg(d, &c.Provider)
			if _, known := connector.LookupProvider(c.Provider); err == nil && !known {
				err = d.Errf("connector %s: unknown provider %q (known: %s)", name, c.Provider, strings.Join(connector.ProviderNames(), ", "))
			}
		case "domain":
			err = oneArg(d, &c.Domain)
		case "token_kind":
			err = oneArg(d, &c.TokenKind)
			if err == nil && c.TokenKind != "user" && c.TokenKind != "bot" {
				err = d.Errf("connector %s: token_kind must be user or bot, got %q", name, c.TokenKind)
			}
		case "tenant":
			err = oneArg(d, &c.Tenant)
		case "issuer":
			err = oneArg(d, &c.Issuer)
		case "revocation_url":
			err = oneArg(d, &c.RevocationURL)
		case "subject":
			err = oneArg(d, &c.Subject)
		case "user":
			err = oneArg(d, &c.User)
		case "authorization_url":
			err = oneArg(d, &c.AuthorizationURL)
		case "token_url":
			err = oneArg(d, &c.TokenURL)
		case "client_id":
			err = oneArg(d, &c.ClientID)
		case "client_secret":
			err = oneArg(d, &c.ClientSecret)
		case "redirect_uri":
			err = oneArg(d, &c.RedirectURI)
		case "scopes":
			c.Scopes = d.RemainingArgs()
			if len(c.Scopes) == 0 {
				err = d.ArgErr()
			}
		case "auth_style":
			err = oneArg(d, &c.AuthStyle)
			switch c.AuthStyle {
			case "basic", "post", "private_key_jwt", "client_assertion":
			default:
				if err == nil {
					err = d.Errf("connector %s: auth_style must be basic, post, private_key_jwt or client_assertion, got %q", name, c.AuthStyle)
				}
			}
		case "client_key":
			c.ClientKey, err = unmarshalClientKey(d, name)
		case "client_key_id":
			err = oneArg(d, &c.ClientKeyID)
		case "client_cert_file":
			err = oneArg(d, &c.ClientCertFile)
		case "assertion_audience":
			err = oneArg(d, &c.AssertionAudience)
		case "client_assertion_file":
			err = oneArg(d, &c.ClientAssertionFile)
		case "pkce":
			var v string
			if err = oneArg(d, &v); err == nil {
				switch v {
				case "on":
					c.PKCE = nil
				case "off":
					off := false
					c.PKCE = &off
				default:
					err = d.Errf("connector %s: pkce must be on or off, got %q", name, v)
				}
			}
		case "cae":
			var v string
			if err = oneArg(d, &v); err == nil {
				if v != "on" && v != "off" {
					err = d.Errf("connector %s: cae must be on or off, got %q", name, v)
				}
				on := v == "on"
				c.CAE = &on
			}
		case "refresh_margin":
			err = durationArg(d, &c.RefreshMargin)
		case "refresh_cooldown":
			err = durationArg(d, &c.RefreshCooldown)
		case "max_wait":
			err = durationArg(d, &c.MaxWait)
		case "max_concurrent_refreshes":
			err = positiveArg(d, name, &c.MaxConcurrentRefreshes)
		case "max_waiting":
			err = positiveArg(d, name, &c.MaxWaiting)
		case "revalidate_interval":
			err = durationOrOff(d, &c.RevalidateInterval)
		case "keepalive":
			err = durationOrOff(d, &c.KeepAlive)
		case "grant":
			err = oneArg(d, &c.Grant)
			if _, perr := connector.ParseGrant(c.Grant); err == nil && perr != nil && !strings.Contains(c.Grant, "{") {
				err = d.Errf("connector %s: %v", name, perr)
			}
		case "audience":
			err = oneArg(d, &c.Audience)
		case "exchange_resource":
			err = oneArg(d, &c.ExchangeResource)
		case "requested_token_type":
			err = oneArg(d, &c.RequestedTokenType)
		case "exchange_cache_size":
			var v string
			if err = oneArg(d, &v); err == nil {
				if c.ExchangeCacheSize, err = strconv.Atoi(v); err != nil || c.ExchangeCacheSize < 1 {
					err = d.Errf("connector %s: exchange_cache_size must be a positive number, got %q", name, v)
				}
			}
		case "resource":
			err = oneArg(d, &c.Resource)
		case "registration":
			err = oneArg(d, &c.Registration)
			if err == nil && c.Registration != registrationDynamic && c.Registration != registrationDocument && c.Registration != registrationStatic {
				err = d.Errf("connector %s: registration must be dynamic, metadata_document or static, got %q", name, c.Registration)
			}
		case "authorization_param", "token_header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("connector %s: %s takes a name and a value", name, opt)
			}
			m := &c.AuthorizationParams
			if opt == "token_header" {
				m = &c.TokenHeaders
			}
			if *m == nil {
				*m = map[string]string{}
			}
			(*m)[args[0]] = args[1]
		case "metadata", "callback_metadata", "allowed_hosts", "metadata_discovery":
			err = c.unmarshalMetadata(d, name, opt)
		default:
			return d.Errf("connector %s: unrecognized option %q", name, opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalClientKey reads client_key file <path> or client_key
// vault_transit <key> [<mount>].
func unmarshalClientKey(d *caddyfile.Dispenser, name string) (*ClientKey, error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 2 && args[0] == "file":
		return &ClientKey{File: args[1]}, nil
	case (len(args) == 2 || len(args) == 3) && args[0] == "vault_transit":
		k := &TransitKey{Key: args[1]}
		if len(args) == 3 {
			k.Mount = args[2]
		}
		return &ClientKey{VaultTransit: k}, nil
	}
	return nil, d.Errf("connector %s: client_key takes file <path> or vault_transit <key> [<mount>]", name)
}

// UnmarshalCaddyfile sets up the Vault store:
//
//	store vault {
//		address   <url> [<url>...]
//		token     <token>
//		mount     <path>
//		prefix    <path>
//		namespace <namespace>
//		timeout   <duration>
//		max_retries <n>
//		encrypt   transit <key> [<mount>]
//	}
//
// where several addresses are the nodes (or load balancers) of one Vault
// cluster, tried in order when the one in use is down, timeout bounds
// each call to Vault with its retries (default 5s), max_retries is how
// many times a failed call is tried again (default 2; -1: never), and encrypt seals
// the tokens of every record with a derived Transit key (mount default:
// transit); and, instead of a token, one of:
//
//	auth token_file <path>
//	auth approle {
//		role_id        <id>
//		secret_id      <id>
//		secret_id_file <path>
//		wrapped
//		mount          <path>
//	}
//	auth kubernetes {
//		role       <role>
//		token_file <path>
//		mount      <path>
//	}
func (v *VaultStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	fields := map[string]*string{
		"token": &v.Token, "mount": &v.Mount,
		"prefix": &v.Prefix, "namespace": &v.Namespace,
	}
	d.Next() // module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "address":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Err("store vault: address takes one or more URLs")
			}
			v.Address, v.Addresses = args[0], args[1:]
			continue
		case "encrypt":
			args := d.RemainingArgs()
			if len(args) < 2 || len(args) > 3 || args[0] != "transit" {
				return d.Err("store vault: encrypt takes: transit <key> [<mount>]")
			}
			v.Encrypt = &VaultEncrypt{Engine: args[0], Key: args[1]}
			if len(args) == 3 {
				v.Encrypt.Mount = args[2]
			}
			continue
		case "timeout":
			if err := durationArg(d, &v.Timeout); err != nil {
				return err
			}
			continue
		case "max_retries":
			var raw string
			if err := oneArg(d, &raw); err != nil {
				return err
			}
			n, err := strconv.Atoi(raw)
			if err != nil {
				return d.Errf("store vault: max_retries %q is not a whole number", raw)
			}
			v.MaxRetries = n
			continue
		case "auth":
			a, err := unmarshalVaultAuth(d)
			if err != nil {
				return err
			}
			v.Auth = a
			continue
		}
		dst, ok := fields[d.Val()]
		if !ok {
			return d.Errf("store vault: unrecognized option %q", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	return nil
}

func unmarshalVaultAuth(d *caddyfile.Dispenser) (*VaultAuth, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	a := &VaultAuth{Method: d.Val()}
	var fields map[string]*string
	switch a.Method {
	case "token":
	case "token_file":
		if !d.NextArg() {
			return nil, d.Err("auth token_file takes the token file's path")
		}
		a.TokenFile = d.Val()
	case "approle":
		fields = map[string]*string{"role_id": &a.RoleID, "secret_id": &a.SecretID, "secret_id_file": &a.SecretIDFile, "mount": &a.MountPath}
	case "kubernetes":
		fields = map[string]*string{"role": &a.Role, "token_file": &a.ServiceAccountTokenFile, "mount": &a.MountPath}
	default:
		return nil, d.Errf("store vault: unknown auth method %q (token, token_file, approle, kubernetes)", a.Method)
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if a.Method == "approle" && d.Val() == "wrapped" {
			a.Wrapped = true
			continue
		}
		dst, ok := fields[d.Val()]
		if !ok {
			return nil, d.Errf("store vault: auth %s: unrecognized option %q", a.Method, d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// UnmarshalCaddyfile sets up the embedded file store:
//
//	store file {
//		path     <directory>
//		key      <base64 key>
//		key_file <path>
//	}
func (f *FileStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := stringOptions(d, "store file", map[string]*string{
		"path": &f.Path, "key": &f.Key, "key_file": &f.KeyFile,
	})
	if err != nil {
		return err
	}
	if f.Key != "" && f.KeyFile != "" {
		return d.Err("store file: give key or key_file, not both")
	}
	return nil
}

// parseConnect is a handler directive whose path matcher "/base/*" also
// matches "/base": otherwise GET /oauth would match no route and Caddy
// would answer an empty 200, where the handler redirects to /oauth/.
func parseConnect(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	c := new(ConnectHandler)
	if err := c.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	if base := basePathOption(h); !coversBasePath(matcherSet, base) {
		// The handler serves only below base_path: a matcher elsewhere
		// leaves the connect routes unreachable, which nothing else
		// would point out.
		adaptLogger().Warn("oauthconn_connect's path matcher does not cover base_path: its routes are unreachable",
			zap.String("base_path", base), zap.String("matcher", string(matcherSet["path"])))
	}
	return h.NewRoute(withBasePaths(matcherSet), c), nil
}

// defaultBasePath is where oauthconn_connect serves unless base_path says
// otherwise.
const defaultBasePath = "/oauth"

// adaptLogger is where warnings found while adapting a Caddyfile go.
var adaptLogger = caddy.Log

// basePathOption is the base_path of the oauthconn global option, or its
// default.
func basePathOption(h httpcaddyfile.Helper) string {
	var app App
	if opt, ok := h.Option("oauthconn").(httpcaddyfile.App); ok {
		json.Unmarshal(opt.Value, &app)
	}
	if app.BasePath == "" {
		return defaultBasePath
	}
	return "/" + strings.Trim(app.BasePath, "/")
}

// coversBasePath reports whether a matcher set's path matcher (if it has
// one) matches the routes below base: a pattern such as base+"/*", a
// prefix of it, or "*".
func coversBasePath(set caddy.ModuleMap, base string) bool {
	var paths caddyhttp.MatchPath
	if set["path"] == nil || json.Unmarshal(set["path"], &paths) != nil {
		return true
	}
	for _, p := range paths {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(base+"/", prefix) {
			return true
		}
	}
	return false
}

// withBasePaths returns a matcher set whose path matcher, for each pattern
// "/base/*", also has "/base". The set given (perhaps a named matcher's,
// shared with other routes) is not changed.
func withBasePaths(set caddy.ModuleMap) caddy.ModuleMap {
	var paths caddyhttp.MatchPath
	if set["path"] == nil || json.Unmarshal(set["path"], &paths) != nil {
		return set
	}
	wider := slices.Clone(paths)
	for _, p := range paths {
		if base, ok := strings.CutSuffix(p, "/*"); ok && base != "" && !slices.Contains(wider, base) {
			wider = append(wider, base)
		}
	}
	if len(wider) == len(paths) {
		return set
	}
	out := maps.Clone(set)
	out["path"] = caddyconfig.JSON(wider, nil)
	return out
}

// UnmarshalCaddyfile sets up the handler:
//
//	oauthconn_connect [<matcher>]
//
// It serves the routes below the oauthconn app's base_path (default /oauth),
// so the usual matcher is /oauth/*; a path matcher /X/* also matches /X
// itself, which redirects to /X/.
func (h *ConnectHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Err("oauthconn_connect takes no block")
	}
	return nil
}

func parseProxy(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(ProxyHandler)
	if err := p.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	if p.ReverseProxy != nil {
		if err := p.ReverseProxy.FinalizeUnmarshalCaddyfile(h); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// UnmarshalCaddyfile sets up the handler:
//
//	oauthconn_proxy [<matcher>] <connector> [<upstream URL>] {
//		replay_limit   <size>|off
//		allow_browsers <origin...>
//		pass_cookies   <name...>
//		scopes         <scope...>
//		# …any reverse_proxy subdirective: header_up, header_down,
//		# transport, timeouts, handle_response, …
//	}
//
// replay_limit 0 is off, as in JSON -1: no request body is kept for a
// replay. allow_browsers, pass_cookies and scopes may be repeated; their
// arguments add up. With scopes, the token attached is one for those
// scopes, obtained with the connection's refresh token, instead of the
// connection's own. The upstream URL is fixed (to and dynamic are not
// allowed), but for {oauthconn.metadata.<name>} placeholders, which the
// connection's metadata fills in on each request (also in header_up
// values), confined to the connector's allowed_hosts; a connector with a
// resource may omit it, the resource URL being the upstream. Use it inside
// handle_path so the app's paths map onto the API's, for example
// handle_path /graph/* { oauthconn_proxy sharepoint https://graph.microsoft.com }.
func (p *ProxyHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	directive := d.Token()
	args := d.RemainingArgs()
	if len(args) != 1 && len(args) != 2 {
		return d.Errf("oauthconn_proxy takes a connector name and an upstream URL, got %d arguments", len(args))
	}
	p.Connector = args[0]
	if len(args) == 2 {
		p.Upstream = args[1]
	}

	// Subdirectives other than ours are reverse_proxy's: collect their
	// tokens into a reverse_proxy directive and let it parse them.
	var open caddyfile.Token
	var forward []caddyfile.Token
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if open.Text == "" {
			d.Prev()
			open = d.Token()
			d.Next()
		}
		switch d.Val() {
		case "replay_limit":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			if s == "off" {
				p.ReplayLimit = replayOff
			} else {
				n, err := humanize.ParseBytes(s)
				switch {
				case err != nil:
					return d.Errf("replay_limit %q: %v (a size such as 256KiB, or off)", s, err)
				case n > math.MaxInt64:
					return d.Errf("replay_limit %q is too large", s)
				case n == 0:
					p.ReplayLimit = replayOff // not the JSON's 0, the default
				default:
					p.ReplayLimit = int64(n)
				}
			}
		case "allow_browsers":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.Err("allow_browsers takes one or more origins, such as https://app.example.com")
			}
			p.AllowBrowsers = append(p.AllowBrowsers, origins...)
		case "pass_cookies":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.Err("pass_cookies takes one or more cookie names")
			}
			p.PassCookies = append(p.PassCookies, names...)
		case "scopes":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.Err("scopes takes one or more scopes, such as https://contoso.sharepoint.com/.default")
			}
			p.Scopes = append(p.Scopes, scopes...)
		case "to", "dynamic":
			return d.Errf("oauthconn_proxy: %s is not allowed; the upstream is the URL argument", d.Val())
		default:
			forward = append(forward, d.NextSegment()...)
		}
	}
	if len(forward) == 0 {
		return nil
	}
	rpName := directive
	rpName.Text = "reverse_proxy"
	toks := append([]caddyfile.Token{rpName, open}, forward...)
	toks = append(toks, d.Token()) // the closing brace
	p.ReverseProxy = new(reverseproxy.Handler)
	return p.ReverseProxy.UnmarshalCaddyfile(caddyfile.NewDispenser(toks))
}

// stringOptions parses a module's block whose options each take one string:
// the module name, no arguments, then "option value" lines.
func stringOptions(d *caddyfile.Dispenser, what string, fields map[string]*string) error {
	d.Next() // module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dst, ok := fields[d.Val()]
		if !ok {
			return d.Errf("%s: unrecognized option %q", what, d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("bad duration %q: %v", s, err)
	}
	if v <= 0 {
		return d.Errf("duration %q must be positive", s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// durationOrOff reads a positive duration, or "off" (stored as -1ns: the
// JSON form of "never" for options whose zero value means the default).
func durationOrOff(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	if d.CountRemainingArgs() == 1 && d.NextArg() {
		if d.Val() == "off" {
			*dst = -1
			return nil
		}
		d.Prev()
	}
	return durationArg(d, dst)
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*VaultStore)(nil)
	_ caddyfile.Unmarshaler = (*FileStore)(nil)
	_ caddyfile.Unmarshaler = (*ConnectHandler)(nil)
	_ caddyfile.Unmarshaler = (*ProxyHandler)(nil)
)

// positiveArg reads the option's one argument, a positive whole number.
func positiveArg(d *caddyfile.Dispenser, connector string, n *int) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		return d.Errf("connector %s: %s %q must be a positive number", connector, opt, s)
	}
	*n = v
	return nil
}
