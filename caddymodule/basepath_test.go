package caddymodule

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestBasePathNotCoveredWarns: adapting a Caddyfile whose oauthconn_connect
// matcher misses base_path warns, as its routes would be unreachable; a
// matcher that covers it does not.
func TestBasePathNotCoveredWarns(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	saved := adaptLogger
	adaptLogger = func() *zap.Logger { return zap.New(core) }
	t.Cleanup(func() { adaptLogger = saved })
	for _, tt := range []struct {
		base, matcher string
		warn          bool
	}{
		{"", "/oauth/*", false},
		{"", "", false},
		{"", "/connect/*", true},
		{"base_path /connect", "/oauth/*", true},
		{"base_path /connect/", "/connect/*", false},
		{"base_path /a/b", "/a/*", false},
		{"base_path /a/b", "*", false},
	} {
		before := logs.Len()
		src := "{\n\toauthconn {\n\t\t" + tt.base + "\n\t}\n}\nhttp://localhost:8080 {\n\toauthconn_connect " + tt.matcher + "\n}\n"
		if _, err := adapt(src); err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		if warned := logs.Len() > before; warned != tt.warn {
			t.Errorf("%+v: warned %v", tt, warned)
		}
	}
}
