package buildmanifest

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestManifestMatchesGoMod fails when xcaddy.toml builds another Caddy than
// the one this module is tested with.
func TestManifestMatchesGoMod(t *testing.T) {
	b, err := os.ReadFile("../../xcaddy.toml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	gm, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse("go.mod", gm, nil)
	if err != nil {
		t.Fatal(err)
	}
	var caddy string
	for _, r := range f.Require {
		if r.Mod.Path == "github.com/caddyserver/caddy/v2" {
			caddy = r.Mod.Version
		}
	}
	if caddy == "" || caddy != m.Caddy {
		t.Fatalf("xcaddy.toml builds Caddy %s, go.mod requires %s", m.Caddy, caddy)
	}
	if !slices.ContainsFunc(m.Plugins, func(p Plugin) bool { return p.Module == f.Module.Mod.Path }) {
		t.Fatalf("xcaddy.toml does not build in %s", f.Module.Mod.Path)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		args    string
		wantErr string
	}{
		{"local", "caddy = \"v2.11.9\"\n[[plugins]]\nmodule = \"example.com/a\"\npath = \".\"\n", "build v2.11.9 --with example.com/a=.", ""},
		{"versioned", "caddy = \"v2.11.9\"\n[[plugins]]\nmodule = \"example.com/a\"\nversion = \"v1.2.3\"\n[[plugins]]\nmodule = \"example.com/b\"\n", "build v2.11.9 --with example.com/a@v1.2.3 --with example.com/b", ""},
		{"no caddy", "[[plugins]]\nmodule = \"a\"\n", "", "caddy must be a v2 version"},
		{"no plugins", "caddy = \"v2.11.9\"\n", "", "no plugins"},
		{"unknown key", "caddy = \"v2.11.9\"\ncadddy = 1\n[[plugins]]\nmodule = \"a\"\n", "", "unknown keys"},
		{"bad toml", "caddy = ", "", "xcaddy.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(m.XcaddyArgs(), " "); got != tt.args {
				t.Fatalf("args = %q, want %q", got, tt.args)
			}
		})
	}
}
