package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// apiError is the JSON body of every error oauthconn answers an app with.
type apiError struct {
	Error        string `json:"error"`
	Message      string `json:"message,omitempty"`
	Connector    string `json:"connector,omitempty"`
	AuthorizeURL string `json:"authorize_url,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeUnavailable(w http.ResponseWriter, retryAfter time.Duration, body apiError) error {
	secs := int(retryAfter.Seconds())
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return writeJSON(w, http.StatusServiceUnavailable, body)
}

// writeOverloaded answers a request shed because too many of the
// connector's requests already wait for a token in this process
// (max_waiting): 503 overloaded with Retry-After, at once. It is not logged
// per request: a wave may shed many.
func writeOverloaded(w http.ResponseWriter, retryAfter time.Duration, connector string) error {
	return writeUnavailable(w, retryAfter, apiError{Error: "overloaded", Connector: connector,
		Message: "too many requests are waiting for this connector's tokens; retry after Retry-After seconds"})
}

// noStore marks a response of the connect routes as private and
// non-referring: they carry flow cookies and provider URLs.
func noStore(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
}

// writeSubjectError answers a request whose subject could not be
// evaluated: 400 subject_required or invalid_subject.
func writeSubjectError(w http.ResponseWriter, connector string, err error) error {
	code := "invalid_subject"
	if errors.Is(err, errSubjectRequired) {
		code = "subject_required"
	}
	return writeJSON(w, http.StatusBadRequest, apiError{Error: code, Connector: connector, Message: err.Error()})
}
