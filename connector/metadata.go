package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/oauth2"
)

// A connection's metadata is a few named, non-secret values that come with
// it, such as Salesforce's instance_url or Atlassian's cloud id: fields of
// the token response, parameters of the authorization response (the
// callback query) or values picked from one discovery request made with the
// new access token. They are kept in the connection's record and can name
// the connection's upstream.

// Discovery is one GET request made right after a connection is authorized,
// with its new access token as "Authorization: Bearer …", whose JSON answer
// holds metadata (Atlassian's accessible-resources lists the sites, and the
// first one's id is the cloud id).
type Discovery struct {
	// URL is the request's absolute https URL (http only for a loopback
	// host).
	URL string
	// Pick maps metadata names to the JSON path of their value in the
	// answer: object keys and array indexes separated by dots, such as
	// "0.id" for the id of the first element of a top-level array.
	Pick map[string]string
}

// Metadata bounds.
const (
	// MaxMetadataValue is the longest value kept, in bytes.
	MaxMetadataValue = 1024
	// maxDiscoveryBody bounds a discovery answer.
	maxDiscoveryBody = 1 << 20
)

// secretNames are names of values that are secrets wherever they appear:
// they are never kept as metadata.
var secretNames = map[string]bool{
	"access_token": true, "refresh_token": true, "id_token": true, "code": true, "state": true,
	"code_verifier": true, "client_secret": true, "client_assertion": true, "assertion": true,
	"device_code": true, "subject_token": true, "actor_token": true, "issued_token": true, "password": true,
}

// ValidMetadataName checks a metadata name: 1 to 64 letters, digits, "_"
// or "-" (it appears in the placeholder {oauthconn.metadata.<name>}), and
// not the name of a secret (access_token, refresh_token, id_token, code,
// state, or any name ending in token, secret or password).
func ValidMetadataName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("metadata name %q must be 1 to 64 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("metadata name %q may hold only letters, digits, _ and -", name)
		}
	}
	lower := strings.ToLower(name)
	if secretNames[lower] || strings.HasSuffix(lower, "token") || strings.HasSuffix(lower, "secret") || strings.HasSuffix(lower, "password") {
		return fmt.Errorf("metadata name %q names a secret; secrets are never kept as metadata", name)
	}
	return nil
}

// MetadataValue converts a JSON or form value into a metadata value: a
// string or a number, at most MaxMetadataValue bytes of printable UTF-8.
// Anything else (objects, arrays, booleans, control characters) is not
// kept.
func MetadataValue(v any) (string, bool) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case json.Number:
		s = v.String()
	default:
		return "", false
	}
	if s == "" || len(s) > MaxMetadataValue || !utf8.ValidString(s) {
		return "", false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return "", false
		}
	}
	return s, true
}

// MetadataNames returns every metadata name the connector keeps, from all
// its sources.
func (c *Config) MetadataNames() []string {
	names := append([]string(nil), c.Metadata...)
	names = append(names, c.CallbackMetadata...)
	if c.Discovery != nil {
		for name := range c.Discovery.Pick {
			names = append(names, name)
		}
	}
	return names
}

// ValidateMetadata checks the metadata settings: valid names, each from
// one source only, a well-formed discovery request, valid allowed hosts.
func (c *Config) ValidateMetadata() error {
	seen := map[string]bool{}
	for _, name := range c.MetadataNames() {
		if err := ValidMetadataName(name); err != nil {
			return fmt.Errorf("connector %s: %w", c.Name, err)
		}
		if seen[name] {
			return fmt.Errorf("connector %s: metadata %q is named twice", c.Name, name)
		}
		seen[name] = true
	}
	if d := c.Discovery; d != nil {
		u, err := url.Parse(d.URL)
		if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || !SecureOrLoopback(u) {
			return fmt.Errorf("connector %s: the metadata discovery URL must be an absolute https URL (http only on a loopback host)", c.Name)
		}
		if len(d.Pick) == 0 {
			return fmt.Errorf("connector %s: the metadata discovery request picks no value", c.Name)
		}
		for name, path := range d.Pick {
			if path == "" || strings.Contains(path, "..") || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") {
				return fmt.Errorf("connector %s: metadata %s: JSON path %q must be keys and indexes separated by single dots", c.Name, name, path)
			}
		}
	}
	for _, p := range c.AllowedHosts {
		if _, err := ParseHostPattern(p); err != nil {
			return fmt.Errorf("connector %s: %w", c.Name, err)
		}
	}
	return nil
}

// MetadataDefaults fills in the preset's metadata defaults where cfg sets
// none: the token response fields it keeps (salesforce: instance_url), the
// request made after connecting (atlassian: the cloud id) and the hosts an
// upstream built from them may name, where each provider documents its API
// hosts.
func MetadataDefaults(cfg *Config) {
	p := providers[cfg.Provider]
	if p == nil {
		return
	}
	if len(cfg.Metadata) == 0 {
		cfg.Metadata = slices.Clone(p.DefaultMetadata)
	}
	if cfg.Discovery == nil && p.MetadataDiscovery != nil {
		d := *p.MetadataDiscovery
		d.Pick = maps.Clone(d.Pick)
		cfg.Discovery = &d
	}
	if len(cfg.AllowedHosts) == 0 {
		cfg.AllowedHosts = slices.Clone(p.AllowedHosts)
	}
}

// AllowedHostPatterns parses cfg's allowed hosts (already validated by New).
func (c *Config) AllowedHostPatterns() ([]HostPattern, error) {
	out := make([]HostPattern, 0, len(c.AllowedHosts))
	for _, s := range c.AllowedHosts {
		p, err := ParseHostPattern(s)
		if err != nil {
			return nil, fmt.Errorf("connector %s: %w", c.Name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// PickMetadata returns the configured metadata fields of a token response
// (nil if it has none): the fields named in Metadata whose values are
// strings or numbers. A refresh response that lacks a field leaves the
// connection's earlier value in place (see tokens.FromOAuth2).
func (c *Connector) PickMetadata(ot *oauth2.Token) map[string]string {
	var out map[string]string
	for _, name := range c.cfg.Metadata {
		if v, ok := MetadataValue(ot.Extra(name)); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

// CallbackMetadata returns the configured metadata parameters of an
// authorization response's query: those named in CallbackMetadata that
// appear exactly once.
func (c *Connector) CallbackMetadata(query url.Values) map[string]string {
	var out map[string]string
	for _, name := range c.cfg.CallbackMetadata {
		vals := query[name]
		if len(vals) != 1 {
			continue
		}
		if v, ok := MetadataValue(vals[0]); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

// ErrDiscovery is wrapped by the errors of DiscoverMetadata.
var ErrDiscovery = errors.New("metadata discovery failed")

// DiscoverMetadata makes the connector's discovery request, if it has one, with
// accessToken and returns the values it picks. Every configured value must
// be found. Errors name the URL and the path, never the token or the body.
func (c *Connector) DiscoverMetadata(ctx context.Context, accessToken string) (map[string]string, error) {
	d := c.cfg.Discovery
	if d == nil {
		return nil, nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("connector %s: %w: GET %s: %s", c.cfg.Name, ErrDiscovery, redactURL(d.URL), fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL, nil)
	if err != nil {
		return nil, fail("%v", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Transport: c.base, Timeout: c.cfg.Timeout}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fail("%v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fail("answered %d", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, fail("answered %q, not JSON", mt)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryBody))
	dec.UseNumber()
	var body any
	if err := dec.Decode(&body); err != nil {
		return nil, fail("the answer is not JSON of at most 1 MiB")
	}
	out := make(map[string]string, len(d.Pick))
	for _, name := range slices.Sorted(maps.Keys(d.Pick)) {
		path := d.Pick[name]
		v, ok := MetadataValue(jsonPath(body, path))
		if !ok {
			return nil, fail("the answer has no string or number at %s (for metadata %s)", path, name)
		}
		out[name] = v
	}
	return out, nil
}

// jsonPath follows a dotted path of object keys and array indexes.
func jsonPath(v any, path string) any {
	for seg := range strings.SplitSeq(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[seg]
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// SecureOrLoopback reports whether u is https, or plain http to a loopback
// host: what this proxy accepts for every URL that carries tokens, codes or
// secrets (public_url, endpoints, upstreams, discovered documents).
func SecureOrLoopback(u *url.URL) bool {
	return u.Scheme == "https" || (u.Scheme == "http" && isLoopbackHost(u.Hostname()))
}

// isLoopbackHost reports whether host (a host name or IP literal, without
// port) is this machine's: localhost, a name under .localhost, or a
// loopback address. Plain http is allowed only to such hosts.
func isLoopbackHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, ok := parseIP(host)
	return ok && ip.IsLoopback()
}
