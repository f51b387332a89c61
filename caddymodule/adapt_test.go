package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestAdapt adapts each testdata/adapt/*.caddyfile.txt (a Caddyfile, a line
// of dashes, the expected JSON) and compares, as Caddy's own adapt tests do.
func TestAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfile.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, json, ok := strings.Cut(string(b), "\n----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", f)
			}
			if !caddytest.CompareAdapt(t, f, caddyfile+"\n", "caddyfile", strings.TrimSpace(json)) {
				t.Fail()
			}
		})
	}
}
