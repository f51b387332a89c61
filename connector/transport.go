package connector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// tokenTransport adapts x/oauth2's token requests to providers that deviate
// from RFC 6749: extra headers (Notion-Version), a JSON body instead of a
// form, parameters repeated from the authorization request, and token
// responses of another shape (rewritten by the preset's ResponseHook).
// Everything else, including the client authentication and response
// parsing, stays x/oauth2's.
type tokenTransport struct {
	base    http.RoundTripper
	headers map[string]string
	json    bool
	repeat  map[string]string // added to token requests that lack them

	// With a preset: its token URL, whose responses are rewritten by
	// hook and normalised (cfg.DefaultLifetime, token_type).
	tokenURL string
	hook     ResponseHook
	cfg      Config
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, v)
	}
	refresh := false
	vals, ok, err := readForm(r)
	if err != nil {
		return nil, err
	}
	if ok {
		refresh = vals.Get("grant_type") == "refresh_token"
		if vals.Get("grant_type") != "" {
			for k, v := range t.repeat {
				if !vals.Has(k) {
					vals.Set(k, v)
				}
			}
		}
		body := []byte(vals.Encode())
		if t.json {
			obj := make(map[string]string, len(vals))
			for k := range vals {
				obj[k] = vals.Get(k)
			}
			if body, err = json.Marshal(obj); err != nil {
				return nil, fmt.Errorf("encoding token request body: %w", err)
			}
			r.Header.Set("Content-Type", "application/json")
		}
		setBody(r, body)
	}
	r.Header.Set("Accept", "application/json")
	resp, err := t.base.RoundTrip(r)
	if err != nil || t.tokenURL == "" || !sameEndpoint(r.URL, t.tokenURL) {
		return resp, err
	}
	return t.rewrite(resp, refresh)
}

// TokenResponse is a token endpoint's answer as a preset's ResponseHook
// sees it: the HTTP status and the JSON object, both of which it may
// change.
type TokenResponse struct {
	// Status is the HTTP status code.
	Status int
	// Body is the response's JSON object.
	Body map[string]any
	// Refresh is true for a refresh (else it answers a code exchange).
	Refresh bool
	// Config is the connector's configuration.
	Config *Config
}

// Fail turns the response into an RFC 6749 5.2 error response: status and
// error code only, as whatever else the provider said may echo secrets.
func (r *TokenResponse) Fail(status int, code string) {
	r.Status = status
	r.Body = map[string]any{"error": code}
}

// ResponseHook rewrites a provider's token response into RFC 6749's shape.
type ResponseHook func(r *TokenResponse)

// maxTokenResponse bounds the token response read, as x/oauth2 does.
const maxTokenResponse = 1 << 20

// rewrite passes a JSON token response through the preset's hook and
// normalises it; other responses pass unchanged.
func (t *tokenTransport) rewrite(resp *http.Response, refresh bool) (*http.Response, error) {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "text/javascript" {
		return resp, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading token response: %w", err)
	}
	tr := &TokenResponse{Status: resp.StatusCode, Refresh: refresh, Config: &t.cfg}
	if json.Unmarshal(raw, &tr.Body) != nil || tr.Body == nil {
		return replaceBody(resp, resp.StatusCode, raw), nil // x/oauth2 reports it
	}
	if t.hook != nil {
		t.hook(tr)
	}
	if tr.Status >= 200 && tr.Status < 300 {
		normalise(tr.Body, t.cfg.DefaultLifetime.Seconds())
	}
	out, err := json.Marshal(tr.Body)
	if err != nil {
		return nil, fmt.Errorf("encoding token response: %w", err)
	}
	return replaceBody(resp, tr.Status, out), nil
}

// normalise fixes what x/oauth2 would misread in a successful token
// response: a missing token_type (Bearer is what is sent), an expires_in
// that is a string or a fraction, a missing one when the preset knows the
// lifetime.
func normalise(body map[string]any, defaultSeconds float64) {
	if _, ok := body["access_token"]; !ok {
		return
	}
	if tt, _ := body["token_type"].(string); tt == "" {
		body["token_type"] = "Bearer"
	}
	for _, k := range []string{"expires_in", "refresh_token_expires_in"} {
		switch v := body[k].(type) {
		case string:
			if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && n > 0 {
				body[k] = math.Round(n)
			} else {
				delete(body, k)
			}
		case float64:
			if v <= 0 {
				delete(body, k)
			} else {
				body[k] = math.Round(v)
			}
		case nil:
		default:
			delete(body, k)
		}
	}
	if _, ok := body["expires_in"]; !ok && defaultSeconds > 0 {
		body["expires_in"] = math.Round(defaultSeconds)
	}
}

func replaceBody(resp *http.Response, status int, body []byte) *http.Response {
	resp.StatusCode = status
	resp.Status = fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header = resp.Header.Clone()
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp
}

// errorCodes maps a provider's own error identifiers to RFC 6749 5.2's
// codes, which say what the failure means for the connection.
func mapError(code string, table map[string]string) (status int, rfc string) {
	rfc, ok := table[code]
	if !ok {
		switch code {
		case "invalid_grant", "invalid_request", "invalid_scope", "unsupported_grant_type", "unauthorized_client", "access_denied":
			rfc = code
		case "invalid_client":
			return http.StatusUnauthorized, code
		default:
			rfc = "invalid_request" // unknown: not known to be permanent
		}
	}
	switch rfc {
	case "invalid_client":
		return http.StatusUnauthorized, rfc
	case "temporarily_unavailable":
		return http.StatusServiceUnavailable, rfc
	case "rate_limited":
		return http.StatusTooManyRequests, rfc
	}
	return http.StatusBadRequest, rfc
}
