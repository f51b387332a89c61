package flow

import (
	"errors"
	"fmt"
	"net/url"
)

// Callback is an authorization response (RFC 6749 4.1.2 and 4.1.2.1, RFC
// 9207), as the provider sends it to the redirect URI.
type Callback struct {
	State            string
	Code             string
	Iss              string
	Error            string
	ErrorDescription string
}

// maxParam bounds each parameter; real codes and states are far shorter.
const maxParam = 4096

// ErrBadCallback is wrapped by every ParseCallback error.
var ErrBadCallback = errors.New("malformed authorization response")

// ParseCallback reads an authorization response from a redirect URI's raw
// query. Each parameter may appear at most once (RFC 6749 3.1) and is
// length-capped; a response carries a code or an error, not both.
func ParseCallback(rawQuery string) (Callback, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Callback{}, fmt.Errorf("%w: query does not parse", ErrBadCallback)
	}
	var cb Callback
	for name, dst := range map[string]*string{
		"state": &cb.State, "code": &cb.Code, "iss": &cb.Iss,
		"error": &cb.Error, "error_description": &cb.ErrorDescription,
	} {
		vals := q[name]
		switch {
		case len(vals) > 1:
			return Callback{}, fmt.Errorf("%w: %s appears %d times", ErrBadCallback, name, len(vals))
		case len(vals) == 1 && len(vals[0]) > maxParam:
			return Callback{}, fmt.Errorf("%w: %s is too long", ErrBadCallback, name)
		case len(vals) == 1:
			*dst = vals[0]
		}
	}
	if cb.State == "" {
		return Callback{}, fmt.Errorf("%w: no state", ErrBadCallback)
	}
	if (cb.Code == "") == (cb.Error == "") {
		return Callback{}, fmt.Errorf("%w: needs exactly one of code and error", ErrBadCallback)
	}
	return cb, nil
}
