package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// A swallowed answer leaves nothing behind: neither its headers, nor the
// trailers that follow its body, nor changes to headers set before the
// attempt; with few headers before it and with more than the snapshot
// holds without copying.
func TestSwallowedAttemptLeavesNoHeaders(t *testing.T) {
	for _, before := range []int{1, 12} {
		t.Run(fmt.Sprint(before, " headers before"), func(t *testing.T) {
			w := httptest.NewRecorder()
			for i := range before {
				w.Header().Set(fmt.Sprint("X-Before-", i), "kept")
			}
			want := w.Header().Clone()
			f := &firstAttempt{decide: func(int) bool { return true }}
			f.begin(w)
			f.Header().Set("Www-Authenticate", `Bearer error="invalid_token"`)
			f.Header().Add("X-Before-0", "upstream")
			f.Header().Del(fmt.Sprint("X-Before-", before-1))
			f.WriteHeader(http.StatusUnauthorized)
			f.Write([]byte("refused"))
			f.Header().Set(http.TrailerPrefix+"X-Late", "t")
			if !f.swallowed || w.Body.Len() != 0 {
				t.Fatalf("swallowed %v, body %q", f.swallowed, w.Body.String())
			}
			f.undo() // as ServeHTTP does before the retry
			if !reflect.DeepEqual(w.Header(), want) {
				t.Fatalf("header after the swallowed answer: %v; want %v", w.Header(), want)
			}
		})
	}
}

// An answer that is not refused passes through with its headers.
func TestPassedAttemptWritesThrough(t *testing.T) {
	w := httptest.NewRecorder()
	f := &firstAttempt{decide: func(int) bool { return false }}
	f.begin(w)
	f.Header().Set("Www-Authenticate", "Bearer")
	f.WriteHeader(http.StatusUnauthorized)
	f.Write([]byte("no"))
	if w.Code != http.StatusUnauthorized || w.Header().Get("Www-Authenticate") != "Bearer" || w.Body.String() != "no" {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body.String())
	}
}
