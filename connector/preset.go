package connector

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Provider is a preset: what one provider needs beyond RFC 6749, in one
// value. Each lives in its own file, provider_<name>.go, registered in
// providers; to add one, copy the file of a provider that resembles it.
// Every field but Name and Doc is optional: the zero value is RFC 6749's
// behaviour.
type Provider struct {
	// Name is what `provider <name>` selects.
	Name string
	// Doc is the provider's OAuth document the preset follows.
	Doc string
	// AuthURL, TokenURL and RevocationURL are the provider's endpoints.
	AuthURL, TokenURL, RevocationURL string
	// Endpoints, if set, computes the endpoints from the connector's
	// options instead (the microsoft tenant, the salesforce domain).
	Endpoints func(cfg *Config, tenant string) (auth, token, revocation string, err error)
	// AuthStyle is the client authentication used unless configured.
	AuthStyle AuthStyle
	// FixedAuthStyle applies AuthStyle even over the configuration: the
	// provider accepts nothing else.
	FixedAuthStyle bool
	// TokenBody is the encoding of token requests (always applied).
	TokenBody BodyFormat
	// TokenHeaders are headers sent on token requests unless configured.
	TokenHeaders map[string]string
	// Scopes are requested when the configuration names none.
	Scopes []string
	// ScopeSeparator joins scopes in the authorization URL; empty: a
	// space (RFC 6749 3.3).
	ScopeSeparator string
	// AuthParams are authorization URL parameters set unless configured,
	// such as those that make the provider issue a refresh token.
	AuthParams map[string]string
	// RepeatParams names authorization parameters that token requests
	// (code exchange and refresh) repeat, for providers that require
	// them there too.
	RepeatParams []string
	// APIBase is the upstream base URL used in examples; a placeholder
	// when the host depends on the connection.
	APIBase string
	// DefaultLifetime is the access token lifetime assumed when a token
	// response has no expires_in; zero: such tokens never expire and are
	// refreshed only after an upstream 401.
	DefaultLifetime time.Duration
	// RotatesRefreshTokens says a refresh returns a new refresh token and
	// invalidates the one used: the new one must be kept, never the old.
	RotatesRefreshTokens bool
	// KeepAlive is the default keep-alive period, for providers that
	// expire refresh tokens left unused.
	KeepAlive time.Duration
	// Revoke revokes a connection's grant where RFC 7009 is not what the
	// provider speaks; nil: RFC 7009 at the revocation URL.
	Revoke Revoker
	// Response rewrites the provider's token responses into RFC 6749's
	// shape before x/oauth2 parses them; nil: none.
	Response ResponseHook
	// Setup adjusts the configuration for the preset's own options (the
	// slack token kind); nil: none.
	Setup func(cfg *Config) error
	// DefaultMetadata are token response fields kept with a connection by
	// default, for upstream URLs that depend on them.
	DefaultMetadata []string
	// MetadataDiscovery is the request made after connecting whose answer
	// holds metadata kept by default, if any.
	MetadataDiscovery *Discovery
	// AllowedHosts are the upstream host patterns allowed by default for
	// upstream URLs built from connection metadata.
	AllowedHosts []string
}

// providers is the registry of presets, by name.
var providers = map[string]*Provider{}

func register(p *Provider) *Provider {
	if _, dup := providers[p.Name]; dup {
		panic("connector: provider " + p.Name + " registered twice")
	}
	providers[p.Name] = p
	return p
}

// LookupProvider returns the preset named name.
func LookupProvider(name string) (*Provider, bool) {
	p, ok := providers[name]
	return p, ok
}

// ProviderNames returns the names of every preset, sorted.
func ProviderNames() []string {
	return slices.Sorted(maps.Keys(providers))
}

// Preset fills in a provider's well-known settings. Values already set in
// cfg win over the preset's, except that a preset's token request format is
// always applied (the provider accepts nothing else). tenant is the
// microsoft preset's tenant.
func Preset(cfg *Config, tenant string) error {
	if cfg.Provider == "" {
		if cfg.AuthStyle == "" {
			cfg.AuthStyle = AuthBasic // RFC 6749 2.3.1: servers must support it
		}
		if len(cfg.RepeatParams) == 0 {
			// RFC 8707 2.2: a resource indicator may be sent again on
			// refresh, and servers that take one need it there.
			cfg.RepeatParams = []string{"resource"}
		}
		return nil
	}
	p, ok := providers[cfg.Provider]
	if !ok {
		return fmt.Errorf("connector %s: unknown provider %q (known: %s)", cfg.Name, cfg.Provider, strings.Join(ProviderNames(), ", "))
	}
	if p.Setup != nil {
		if err := p.Setup(cfg); err != nil {
			return fmt.Errorf("connector %s: %w", cfg.Name, err)
		}
	}
	auth, token, revoke := p.AuthURL, p.TokenURL, p.RevocationURL
	if p.Endpoints != nil {
		var err error
		if auth, token, revoke, err = p.Endpoints(cfg, tenant); err != nil {
			return fmt.Errorf("connector %s: %w", cfg.Name, err)
		}
	}
	setDefault(&cfg.AuthURL, auth)
	setDefault(&cfg.TokenURL, token)
	setDefault(&cfg.RevocationURL, revoke)
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = slices.Clone(p.Scopes)
	}
	setDefault(&cfg.ScopeSeparator, p.ScopeSeparator)
	if p.FixedAuthStyle || cfg.AuthStyle == "" {
		cfg.AuthStyle = p.AuthStyle
	}
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = AuthBasic
	}
	if p.TokenBody != "" {
		cfg.TokenBody = p.TokenBody
	}
	cfg.TokenHeaders = withDefaults(cfg.TokenHeaders, p.TokenHeaders)
	cfg.AuthParams = withDefaults(cfg.AuthParams, p.AuthParams)
	if len(cfg.RepeatParams) == 0 {
		cfg.RepeatParams = slices.Clone(p.RepeatParams)
	}
	if cfg.DefaultLifetime == 0 {
		cfg.DefaultLifetime = p.DefaultLifetime
	}
	cfg.RotatesRefreshTokens = cfg.RotatesRefreshTokens || p.RotatesRefreshTokens
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = p.KeepAlive
	}
	return nil
}

// withDefaults returns m with defaults' entries that m lacks (or has
// empty).
func withDefaults(m, defaults map[string]string) map[string]string {
	if len(defaults) == 0 {
		return m
	}
	if m == nil {
		m = make(map[string]string, len(defaults))
	}
	for k, v := range defaults {
		if m[k] == "" {
			m[k] = v
		}
	}
	return m
}

// MicrosoftCapability is the client capability the microsoft preset
// declares: "cp1", a client that handles claims challenges.
const MicrosoftCapability = "cp1"

func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}
