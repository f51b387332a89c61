package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ErrIssuerMismatch means an authorization response names another
// authorization server than the connector's (an RFC 9207 mix-up attack),
// or omits the issuer where the server promises to send it.
var ErrIssuerMismatch = errors.New("authorization response issuer does not match the connector's")

// Metadata is what the connector uses of the authorization server's RFC
// 8414 metadata.
type Metadata struct {
	Issuer string `json:"issuer"`
	// ISSParameterSupported says the server sends iss in authorization
	// responses (RFC 9207).
	ISSParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
}

type issuerState struct {
	mu      sync.Mutex
	meta    *Metadata
	fetched time.Time
}

// CheckIssuer checks the iss parameter of an authorization response
// (RFC 9207) before any token request: when the connector has an issuer, a
// present iss must equal it, and a missing one is refused if the server's
// metadata says it always sends it. Without a configured issuer nothing can
// be checked.
func (c *Connector) CheckIssuer(ctx context.Context, iss string) error {
	if c.cfg.Issuer == "" {
		return nil
	}
	m, _ := c.metadata(ctx)
	return checkIssuer(c.cfg.Issuer, m.ISSParameterSupported, iss)
}

func checkIssuer(configured string, required bool, iss string) error {
	switch {
	case iss != "" && iss != configured:
		return fmt.Errorf("%w: got another issuer", ErrIssuerMismatch)
	case iss == "" && required:
		return fmt.Errorf("%w: the server sends iss but the response has none", ErrIssuerMismatch)
	}
	return nil
}

// metadata returns the authorization server's metadata, fetched once (and
// again after a failure, at most every minute).
func (c *Connector) metadata(ctx context.Context) (Metadata, error) {
	st := &c.issuer
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.meta != nil {
		return *st.meta, nil
	}
	if time.Since(st.fetched) < time.Minute {
		return Metadata{}, errors.New("authorization server metadata unavailable; retrying later")
	}
	st.fetched = time.Now()
	m, err := c.fetchMetadata(ctx)
	if err != nil {
		return Metadata{}, err
	}
	st.meta = &m
	return m, nil
}

// Discover fetches the server's metadata ahead of the callback, which then
// knows whether iss is required. Errors are for logging: while the metadata
// cannot be had, a present iss is still checked.
func (c *Connector) Discover(ctx context.Context) error {
	if c.cfg.Issuer == "" {
		return nil
	}
	_, err := c.metadata(ctx)
	return err
}

// fetchMetadata tries RFC 8414's well-known location, then OpenID
// Connect Discovery's, and checks that the document is the issuer's own.
func (c *Connector) fetchMetadata(ctx context.Context) (Metadata, error) {
	u, err := url.Parse(c.cfg.Issuer)
	if err != nil {
		return Metadata{}, err
	}
	path := strings.TrimRight(u.Path, "/")
	candidates := []string{
		u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + path,
		strings.TrimRight(c.cfg.Issuer, "/") + "/.well-known/openid-configuration",
	}
	var errs []error
	for _, loc := range candidates {
		m, err := c.getMetadata(ctx, loc)
		if err == nil {
			if m.Issuer != c.cfg.Issuer {
				return Metadata{}, fmt.Errorf("connector %s: metadata at %s names issuer %q", c.cfg.Name, loc, m.Issuer)
			}
			return m, nil
		}
		errs = append(errs, err)
	}
	return Metadata{}, fmt.Errorf("connector %s: fetching authorization server metadata: %w", c.cfg.Name, errors.Join(errs...))
}

func (c *Connector) getMetadata(ctx context.Context, loc string) (Metadata, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return Metadata{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return Metadata{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Metadata{}, fmt.Errorf("%s: status %d", loc, resp.StatusCode)
	}
	var m Metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return Metadata{}, fmt.Errorf("%s: %w", loc, err)
	}
	return m, nil
}
