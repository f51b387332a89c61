package connector

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The token request layers (the preset's request format, and client
// authentication by assertion) rewrite the form body x/oauth2 sends.

// readForm reads r's body when it is an application/x-www-form-urlencoded
// form; ok is false (and r untouched) when it is not.
func readForm(r *http.Request) (form url.Values, ok bool, err error) {
	if r.Body == nil {
		return nil, false, nil
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, false, nil
	}
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, false, fmt.Errorf("reading token request body: %w", err)
	}
	if form, err = url.ParseQuery(string(b)); err != nil {
		return nil, false, fmt.Errorf("parsing token request body: %w", err)
	}
	return form, true, nil
}

// setBody makes b r's body, with its length, replayable for redirects.
func setBody(r *http.Request, b []byte) {
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

// sameEndpoint reports whether u is the endpoint at raw (query aside).
func sameEndpoint(u *url.URL, raw string) bool {
	e, err := url.Parse(raw)
	return err == nil && strings.EqualFold(u.Host, e.Host) && u.Path == e.Path
}
