package connector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
)

// tokenTransport adapts x/oauth2's token requests to providers that deviate
// from RFC 6749: extra headers (Notion-Version) and a JSON body instead of a
// form; and adds the resource indicator (RFC 8707), which x/oauth2 cannot
// put on a refresh. Everything else, including the client authentication
// and response parsing, stays x/oauth2's.
type tokenTransport struct {
	base     http.RoundTripper
	headers  map[string]string
	json     bool
	resource string
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, v)
	}
	if t.resource != "" && r.Body != nil {
		if err := addFormParam(r, "resource", t.resource); err != nil {
			return nil, err
		}
	}
	if t.json && r.Body != nil {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
			form, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("reading token request body: %w", err)
			}
			vals, err := url.ParseQuery(string(form))
			if err != nil {
				return nil, fmt.Errorf("parsing token request body: %w", err)
			}
			obj := make(map[string]string, len(vals))
			for k := range vals {
				obj[k] = vals.Get(k)
			}
			body, err := json.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("encoding token request body: %w", err)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
			r.Header.Set("Content-Type", "application/json")
		}
	}
	r.Header.Set("Accept", "application/json")
	return t.base.RoundTrip(r)
}

// addFormParam sets a parameter of a form-encoded request body that does
// not have it yet.
func addFormParam(r *http.Request, key, value string) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil
	}
	form, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return fmt.Errorf("reading token request body: %w", err)
	}
	vals, err := url.ParseQuery(string(form))
	if err != nil {
		return fmt.Errorf("parsing token request body: %w", err)
	}
	if vals.Get(key) == "" {
		vals.Set(key, value)
	}
	body := []byte(vals.Encode())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}
