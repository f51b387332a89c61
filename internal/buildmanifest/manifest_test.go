package buildmanifest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestManifestMatchesGoMod fails when xcaddy.toml builds another Caddy than
// the one this module is tested with.
func TestManifestMatchesGoMod(t *testing.T) {
	m := projectManifest(t)
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
		{"local, unpublished", "caddy = \"v2.11.9\"\n[[plugins]]\nmodule = \"example.com/a\"\nversion = \"v0.0.0-00010101000000-000000000000\"\npath = \".\"\n", "build v2.11.9 --with example.com/a@v0.0.0-00010101000000-000000000000=.", ""},
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

// TestXcaddyBuild builds a custom Caddy from xcaddy.toml with xcaddy, as
// `make xcaddy` does, and checks that it has the caddy-oauthconn modules.
// It fetches Caddy's dependencies through the Go module proxy (or the
// module cache), so it is left out of -short runs.
func TestXcaddyBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy with xcaddy")
	}
	m := projectManifest(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "caddy")
	args := append([]string{"run", XcaddyModule}, m.XcaddyArgs()...)
	args = append(args, "--output", out)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if log, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xcaddy build: %v\n%s", err, log)
	}
	list, err := exec.Command(out, "list-modules").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"oauthconn", "http.handlers.oauthconn_connect", "http.handlers.oauthconn_proxy", "oauthconn.stores.vault", "oauthconn.stores.file", "admin.api.oauthconn"} {
		if !slices.Contains(strings.Fields(string(list)), mod) {
			t.Errorf("the built Caddy lacks %s", mod)
		}
	}
}

// projectManifest reads the project's own xcaddy.toml.
func projectManifest(t *testing.T) Manifest {
	t.Helper()
	b, err := os.ReadFile("../../xcaddy.toml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
