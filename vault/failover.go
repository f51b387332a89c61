package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
)

// failover is the Vault client's transport when the store knows several
// addresses of one Vault cluster. The client always builds its requests for
// the first address; failover sends each one to the address in use, and
// moves on to the next address, for this request and the ones after it,
// when the node does not answer or answers that it cannot serve (sealed,
// no active node to forward to). It sticks to an address that works: any
// node of a cluster serves every request, since standbys forward to the
// active node.
//
// Resending is as safe as the Vault client's own retries, which resend
// after the same errors: a write is a check-and-set write, so a write that
// did land is not repeated, it fails as a conflict, which the store's
// callers handle by reading again.
type failover struct {
	next  http.RoundTripper
	addrs []*url.URL
	cur   atomic.Int32 // index into addrs of the address in use
	log   func() *zap.Logger
}

// parseAddresses checks that each address is an http or https URL with no
// path, as a failover address must be: requests are moved between them by
// replacing the scheme and host.
func parseAddresses(addrs []string) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(addrs))
	for n, a := range addrs {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The parse error would repeat the address, which may
			// carry a password.
			return nil, fmt.Errorf("vault: address %d is not an http:// or https:// URL (several addresses cannot include a unix socket)", n+1)
		}
		if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("vault: address %d (%s://%s) has a path, query or user information; several addresses must be plain scheme://host:port URLs", n+1, u.Scheme, u.Host)
		}
		out = append(out, u)
	}
	return out, nil
}

// RoundTrip implements http.RoundTripper.
func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != f.addrs[0].Host || req.URL.Scheme != f.addrs[0].Scheme {
		// Not built for the cluster's first address: a redirect the
		// client follows, say. Send it where it goes.
		return f.next.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	start := int(f.cur.Load())
	var (
		resp *http.Response
		err  error
	)
	for k := range f.addrs {
		i := (start + k) % len(f.addrs)
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = f.addrs[i].Scheme, f.addrs[i].Host, f.addrs[i].Host
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		if resp != nil {
			resp.Body.Close() // the previous node's refusal
		}
		resp, err = f.next.RoundTrip(r)
		if req.Context().Err() != nil {
			return resp, err // the caller gave up: no other node
		}
		var why string
		resp, why = unavailable(resp, err)
		if why == "" {
			if i != start && f.cur.CompareAndSwap(int32(start), int32(i)) {
				f.log().Warn("vault node unavailable; using the next address",
					zap.String("from", f.addrs[start].String()), zap.String("to", f.addrs[i].String()))
			}
			f.follow(resp, i)
			return resp, err
		}
		f.log().Debug("vault node unavailable", zap.String("address", f.addrs[i].String()), zap.String("why", why))
	}
	return resp, err // every node refused: the last answer
}

// follow switches to the address a redirect points at, if it is one of the
// cluster's: a standby that does not forward requests redirects them to the
// active node, and the client follows the redirect through the first
// address, which must then lead there.
func (f *failover) follow(resp *http.Response, from int) {
	if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect {
		return
	}
	loc, err := resp.Location()
	if err != nil {
		return
	}
	for j, a := range f.addrs {
		if j != from && a.Host == loc.Host && a.Scheme == loc.Scheme {
			f.cur.Store(int32(j))
			// The client resends to the redirect's URL: make it the
			// first address's, which now leads to j.
			resp.Header.Set("Location", strings.Replace(loc.String(), a.Scheme+"://"+a.Host, f.addrs[0].Scheme+"://"+f.addrs[0].Host, 1))
			return
		}
	}
}

// unavailable says why a node's answer means that another node should be
// asked ("" if it does not), and returns the response with its body intact.
// A node that cannot be reached, a sealed node (503), a gateway in front of
// a node that is down (502, 504) and a standby that has no active node to
// forward to during an election (500 "active cluster node not found" or
// "node not active") are unavailable; every other answer, errors included,
// is the cluster's answer.
func unavailable(resp *http.Response, err error) (*http.Response, string) {
	if err != nil {
		return resp, err.Error()
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return resp, resp.Status
	case http.StatusInternalServerError:
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return resp, rerr.Error()
		}
		s := string(b)
		if strings.Contains(s, "active cluster node not found") || strings.Contains(s, "node not active") ||
			strings.Contains(s, "Vault is sealed") {
			return resp, "no active node"
		}
	}
	return resp, ""
}

// current returns the address in use.
func (f *failover) current() string { return f.addrs[f.cur.Load()].String() }
