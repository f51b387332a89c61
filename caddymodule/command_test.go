package caddymodule

import (
	"io"
	"os"
	"testing"
)

// TestImportReadsAPipe: a refresh token piped to oauthconn import is read
// whole, trimmed.
func TestImportReadsAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		io.WriteString(w, "  rt-piped\n")
		w.Close()
	}()
	got, err := readRefreshToken(r, io.Discard, "demo")
	if err != nil || got != "rt-piped" {
		t.Fatalf("got %q, %v", got, err)
	}
}
