package caddymodule

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// finding is one result of the doctor's checks: never a secret.
type finding struct {
	// Level is ok, warn or error.
	Level     string `json:"level"`
	Connector string `json:"connector,omitempty"`
	// Check names what was checked, such as token_url or store.
	Check   string `json:"check"`
	Message string `json:"message"`
	// Fix says what to change, for a warning or an error.
	Fix string `json:"fix,omitempty"`
}

// microsoftLogin is Microsoft's identity platform, whose per-tenant
// metadata the doctor reads; a variable so that tests can stand in for it.
var microsoftLogin = "https://login.microsoftonline.com"

// doctorTimeout bounds each network call of the doctor's checks.
const doctorTimeout = 10 * time.Second

// doctor checks the running configuration against the world: each
// connector's endpoints (DNS, TLS, an HTTP answer), the provider's
// published metadata where there is some, the redirect URI's form, and the
// store. It runs inside the process because that is where the expanded
// configuration (placeholders, presets) and the store's credentials are.
// only, if not empty, limits the connector checks to one connector.
func (a *App) doctor(ctx context.Context, only string) []finding {
	d := &doctorRun{app: a, client: &http.Client{
		Timeout: doctorTimeout,
		// A redirect is an answer: the endpoint exists.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	for _, name := range a.connectorNames() {
		if only == "" || only == name {
			d.connector(ctx, a.Connectors[name])
		}
	}
	d.store(ctx)
	return d.out
}

type doctorRun struct {
	app    *App
	client *http.Client
	out    []finding
}

func (d *doctorRun) add(level, conn, check, msg, fix string) {
	d.out = append(d.out, finding{Level: level, Connector: conn, Check: check, Message: msg, Fix: fix})
}

func (d *doctorRun) connector(ctx context.Context, c *Connector) {
	if c.res != nil {
		conn, err := c.client(ctx)
		if err != nil {
			d.add("error", c.name, "discovery", err.Error(), "check the resource URL and that its authorization server is reachable")
			return
		}
		d.add("ok", c.name, "discovery", "the resource's authorization server is "+conn.Config().Issuer, "")
		return
	}
	if c.conn == nil {
		d.add("warn", c.name, "client_id", "the connector is unconfigured: client_id is empty, so its routes answer 503",
			"register the app with the provider and set client_id (and client_secret)")
		return
	}
	cfg := c.conn.Config()
	if c.authorizes() {
		d.redirectURI(c.name, cfg.RedirectURL)
		d.endpoint(ctx, c.name, "authorization_url", cfg.AuthURL, http.MethodGet)
	}
	d.endpoint(ctx, c.name, "token_url", cfg.TokenURL, http.MethodPost)
	tenant := caddy.NewReplacer().ReplaceKnown(c.Tenant, "")
	d.metadata(ctx, c.name, cfg.Provider, tenant, cfg.Issuer, cfg.AuthURL, cfg.TokenURL)
}

// redirectURI checks the form of the URI the provider sends browsers back
// to: the provider compares it with the registered one, and the callback
// route is only at {base_path}/callback.
func (d *doctorRun) redirectURI(conn, raw string) {
	u, err := url.Parse(raw)
	want := d.app.BasePath + "/callback"
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		d.add("error", conn, "redirect_uri", fmt.Sprintf("%q is not an absolute http(s) URL", raw),
			"set public_url (or the connector's redirect_uri) to an absolute https URL")
	case !connector.SecureOrLoopback(u):
		d.add("error", conn, "redirect_uri", fmt.Sprintf("%s is plain http on a host that is not loopback: providers refuse it, and the code would travel in clear", raw),
			"serve the connect routes over https and use an https public_url")
	case u.Path != want:
		d.add("error", conn, "redirect_uri", fmt.Sprintf("%s has path %q, but the callback route is %s", raw, u.Path, want),
			"leave redirect_uri unset (it defaults to {public_url}{base_path}/callback) or make its path "+want)
	case d.app.public != nil && u.Host != d.app.public.Host:
		d.add("warn", conn, "redirect_uri", fmt.Sprintf("%s is on another host than public_url %s: the flow cookie is set on the latter", raw, d.app.PublicURL),
			"use the same host for redirect_uri and public_url")
	default:
		d.add("ok", conn, "redirect_uri", raw+" (register exactly this URI with the provider)", "")
	}
}

// endpoint checks that rawURL resolves, and answers over TLS (when https)
// with a status that such an endpoint gives. It sends no credential.
func (d *doctorRun) endpoint(ctx context.Context, conn, check, rawURL, method string) {
	u, err := url.Parse(rawURL)
	if err != nil || !u.IsAbs() || u.Host == "" {
		d.add("error", conn, check, fmt.Sprintf("%q is not an absolute URL", rawURL), "set "+check+" to the provider's endpoint")
		return
	}
	if !connector.SecureOrLoopback(u) {
		d.add("warn", conn, check, rawURL+" is not https", "use the provider's https endpoint")
	}
	if net.ParseIP(u.Hostname()) == nil {
		rctx, cancel := context.WithTimeout(ctx, doctorTimeout)
		_, err := net.DefaultResolver.LookupHost(rctx, u.Hostname())
		cancel()
		if err != nil {
			d.add("error", conn, check, fmt.Sprintf("%s: the host %s does not resolve: %v", rawURL, u.Hostname(), err),
				"check the URL's host name (a typo, or a tenant placeholder left empty) and this machine's DNS")
			return
		}
	}
	var body io.Reader
	if method == http.MethodPost {
		// An empty grant: a token endpoint answers it with an OAuth error.
		body = strings.NewReader("grant_type=")
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		d.add("error", conn, check, fmt.Sprintf("%s: %v", rawURL, err), "fix "+check)
		return
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		msg, fix := describeDialError(err)
		d.add("error", conn, check, rawURL+": "+msg, fix)
		return
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		d.add("error", conn, check, fmt.Sprintf("%s answers %s to %s: it is not the provider's %s endpoint", rawURL, resp.Status, method, strings.TrimSuffix(check, "_url")),
			"check "+check+" against the provider's documentation or its metadata")
	case resp.StatusCode >= 500:
		d.add("warn", conn, check, fmt.Sprintf("%s answers %s: the provider has trouble", rawURL, resp.Status), "check the provider's status; nothing to change here if it passes")
	default:
		d.add("ok", conn, check, fmt.Sprintf("%s answers %s to a %s without credentials", rawURL, resp.Status, method), "")
	}
}

// describeDialError says what failed in reaching an endpoint and what to do.
func describeDialError(err error) (msg, fix string) {
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	var rerr tls.RecordHeaderError
	switch {
	case errors.As(err, &uerr):
		return "TLS: the certificate is signed by an authority this machine does not trust", "install the issuing CA in the system's trust store (or in the container image)"
	case errors.As(err, &herr):
		return "TLS: the certificate is for another host name: " + herr.Error(), "use the host name the certificate names"
	case errors.As(err, &cerr):
		return "TLS: the certificate is invalid: " + cerr.Error(), "check the certificate's validity dates and this machine's clock"
	case errors.As(err, &rerr):
		return "TLS: the server does not speak TLS on this port", "use http:// for a loopback test server, or the right port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", "check the port, and that the server runs"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "no answer within " + doctorTimeout.String(), "check firewalls and egress proxies between this machine and the provider"
	}
	return err.Error(), "check the URL and the network path to it"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// providerMetadata is what the doctor compares in RFC 8414 / OpenID
// Connect Discovery metadata.
type providerMetadata struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
}

// metadata compares the connector's endpoints and issuer with what the
// provider publishes, when it publishes something.
func (d *doctorRun) metadata(ctx context.Context, conn, provider, tenant, issuer, authURL, tokenURL string) {
	var locations []string
	switch {
	case provider == "microsoft":
		if tenant == "" {
			tenant = "common"
		}
		locations = []string{microsoftLogin + "/" + url.PathEscape(tenant) + "/v2.0/.well-known/openid-configuration"}
	case issuer != "":
		iu, err := url.Parse(issuer)
		if err != nil {
			d.add("error", conn, "issuer", fmt.Sprintf("%q is not a URL", issuer), "set issuer to the provider's issuer identifier")
			return
		}
		locations = []string{
			iu.Scheme + "://" + iu.Host + "/.well-known/oauth-authorization-server" + strings.TrimRight(iu.Path, "/"),
			strings.TrimRight(issuer, "/") + "/.well-known/openid-configuration",
		}
	default:
		tu, err := url.Parse(tokenURL)
		if err != nil || tu.Host == "" {
			return
		}
		origin := tu.Scheme + "://" + tu.Host
		locations = []string{origin + "/.well-known/oauth-authorization-server", origin + "/.well-known/openid-configuration"}
	}
	var m providerMetadata
	var loc string
	for _, l := range locations {
		got, status, err := d.fetchMetadata(ctx, l)
		if err == nil {
			m, loc = got, l
			break
		}
		if provider == "microsoft" && status == http.StatusBadRequest {
			d.add("error", conn, "tenant", fmt.Sprintf("Microsoft does not know tenant %q (%s answers 400)", tenant, l),
				"set tenant to the directory (tenant) ID or a verified domain of your Entra ID directory, or common/organizations")
			return
		}
	}
	if loc == "" {
		level, fix := "ok", ""
		if issuer != "" {
			level, fix = "warn", "check issuer: the provider should publish metadata for it (RFC 8414 or OpenID Connect Discovery)"
		}
		d.add(level, conn, "metadata", "the provider publishes no metadata at "+strings.Join(locations, " or ")+"; nothing to compare", fix)
		return
	}
	problems := 0
	if issuer != "" && m.Issuer != issuer {
		problems++
		d.add("error", conn, "issuer", fmt.Sprintf("issuer is %s, but the metadata at %s names %s", issuer, loc, m.Issuer),
			"set issuer to "+m.Issuer)
	}
	if m.AuthorizationEndpoint != "" && authURL != "" && m.AuthorizationEndpoint != authURL {
		problems++
		d.add("error", conn, "authorization_url", fmt.Sprintf("authorization_url is %s, but the metadata at %s says %s", authURL, loc, m.AuthorizationEndpoint),
			"set authorization_url to "+m.AuthorizationEndpoint)
	}
	if m.TokenEndpoint != "" && m.TokenEndpoint != tokenURL {
		problems++
		d.add("error", conn, "token_url", fmt.Sprintf("token_url is %s, but the metadata at %s says %s", tokenURL, loc, m.TokenEndpoint),
			"set token_url to "+m.TokenEndpoint)
	}
	if problems == 0 {
		d.add("ok", conn, "metadata", "the endpoints match the provider's metadata at "+loc, "")
	}
}

func (d *doctorRun) fetchMetadata(ctx context.Context, loc string) (providerMetadata, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return providerMetadata{}, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return providerMetadata{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return providerMetadata{}, resp.StatusCode, fmt.Errorf("status %d", resp.StatusCode)
	}
	var m providerMetadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil || m.Issuer == "" {
		return providerMetadata{}, resp.StatusCode, errors.New("not metadata")
	}
	return m, resp.StatusCode, nil
}

// store checks the store: for Vault, that it answers and is unsealed and
// that the token may do what the proxy does on each kind of record; for
// any store, that a record can be written, read back and deleted.
func (d *doctorRun) store(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, doctorTimeout)
	defer cancel()
	where := d.app.storeAddress()
	if d.app.storeFrom != "" {
		where += " (from " + d.app.storeFrom + ")"
	}
	if v, ok := d.app.rawStore.(*vault.Store); ok {
		if err := v.Health(ctx); err != nil {
			fix := "check that Vault runs, is unsealed, and that this address reaches it"
			if d.app.storeFrom == defaultVaultOrigin {
				fix = "no Vault address is configured and VAULT_ADDR is unset: set the store's address or VAULT_ADDR"
			}
			d.add("error", "", "store", "Vault at "+where+": "+err.Error(), fix)
			return
		}
		d.add("ok", "", "store", "Vault at "+where+" answers and is unsealed", "")
		paths := []string{"states/doctor-probe", "health/doctor-probe"}
		for _, name := range d.app.connectorNames() {
			paths = append(paths, "tokens/"+name)
		}
		bad := false
		for _, p := range paths {
			if err := v.CheckCapabilities(ctx, p); err != nil {
				bad = true
				d.add("error", "", "store", err.Error(),
					"grant the token's policy create, read, update on <mount>/data/<prefix>/* and read, update, delete, list on <mount>/metadata/<prefix>/* (see README, Switch to Vault)")
				break
			}
		}
		if bad {
			return
		}
		d.add("ok", "", "store", "the Vault token has the capabilities the proxy needs on its records", "")
	}
	if err := checkStore(ctx, d.app.rawStore); err != nil {
		d.add("error", "", "store", d.app.rawStore.Location()+": "+err.Error(), "check the store's permissions and free space")
		return
	}
	d.add("ok", "", "store", d.app.rawStore.Location()+": a record can be written, read back and deleted", "")
}

// adminDoctor serves GET /oauthconn/doctor[?connector=].
func (a *App) adminDoctor(w http.ResponseWriter, r *http.Request) error {
	only := r.URL.Query().Get("connector")
	if only != "" && a.Connectors[only] == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown connector %q", only)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"findings": a.doctor(r.Context(), only)})
}
