// Package buildmanifest reads xcaddy.toml, the manifest that says which
// Caddy version and plugins a custom Caddy is built with, and turns it into
// xcaddy's command line.
package buildmanifest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
)

// Manifest is the content of xcaddy.toml.
type Manifest struct {
	// Caddy is the Caddy version, such as v2.11.9.
	Caddy string `toml:"caddy"`
	// Plugins are the modules built in.
	Plugins []Plugin `toml:"plugins"`
}

// Plugin is one module built into Caddy.
type Plugin struct {
	// Module is the Go module path.
	Module string `toml:"module"`
	// Version pins a published version. With Path, it is the version the
	// local directory stands in for: a module not (yet) published, such as
	// a checkout, needs one, or the Go command asks the module proxy for
	// its latest version, which the proxy refuses.
	Version string `toml:"version"`
	// Path is a local directory to build the module from.
	Path string `toml:"path"`
}

// Parse reads a manifest and checks that it is complete.
func Parse(data string) (Manifest, error) {
	var m Manifest
	md, err := toml.Decode(data, &m)
	if err != nil {
		return Manifest{}, fmt.Errorf("xcaddy.toml: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Manifest{}, fmt.Errorf("xcaddy.toml: unknown keys %v", und)
	}
	if !strings.HasPrefix(m.Caddy, "v2.") {
		return Manifest{}, fmt.Errorf("xcaddy.toml: caddy must be a v2 version such as v2.11.9, got %q", m.Caddy)
	}
	if len(m.Plugins) == 0 {
		return Manifest{}, errors.New("xcaddy.toml: no plugins")
	}
	for i, p := range m.Plugins {
		if p.Module == "" {
			return Manifest{}, fmt.Errorf("xcaddy.toml: plugin %d has no module", i+1)
		}
	}
	return m, nil
}

// XcaddyModule is the xcaddy command that `make xcaddy` and the tests run.
const XcaddyModule = "github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5"

// XcaddyArgs returns the arguments of `xcaddy`.
func (m Manifest) XcaddyArgs() []string {
	args := []string{"build", m.Caddy}
	for _, p := range m.Plugins {
		w := p.Module
		if p.Version != "" {
			w += "@" + p.Version
		}
		if p.Path != "" {
			w += "=" + p.Path
		}
		args = append(args, "--with", w)
	}
	return args
}
