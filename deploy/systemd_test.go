package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"
)

const unitFile = "systemd/caddy-oauthconn.service"

// unit is a systemd unit file: each section's settings, every assignment
// of a key in order (an empty one resets a list in systemd).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not a setting", unitFile, i+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// get is a single-valued setting's value ("" if unset).
func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// env is the unit's Environment=, with %S (the state directories' root)
// expanded for a system service.
func (u unit) env() map[string]string {
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
			env[k] = strings.ReplaceAll(v, "%S", "/var/lib")
		}
	}
	return env
}

// credentials maps each LoadCredential= name to its source file.
func (u unit) credentials() map[string]string {
	creds := map[string]string{}
	for _, v := range u["Service"]["LoadCredential"] {
		name, src, _ := strings.Cut(v, ":")
		creds[name] = src
	}
	return creds
}

func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, string(readFile(t, unitFile)))

	// Hardening: each setting the deployment relies on, with its value.
	for key, want := range map[string]string{
		"Type":                    "notify", // Caddy tells systemd when it is ready
		"DynamicUser":             "yes",
		"StateDirectory":          "caddy-oauthconn",
		"RuntimeDirectory":        "caddy-oauthconn",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"UMask":                   "0077",
	} {
		if vals, ok := u["Service"][key]; !ok || vals[len(vals)-1] != want {
			t.Errorf("%s=%v, want %s=%s", key, vals, key, want)
		}
	}
	if filters := u["Service"]["SystemCallFilter"]; !slices.Contains(filters, "@system-service") {
		t.Errorf("SystemCallFilter=%v: want @system-service", filters)
	}
	stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil || stop < 20*time.Second {
		t.Errorf("TimeoutStopSec=%s: stopping takes up to 10 s to write refreshed tokens; give it 20 s or more", u.get("Service", "TimeoutStopSec"))
	}

	// The commands: run and reload the same Caddyfile.
	start := strings.Fields(u.get("Service", "ExecStart"))
	reload := strings.Fields(u.get("Service", "ExecReload"))
	if len(start) < 6 || start[1] != "run" || start[2] != "--config" || !slices.Equal(start[4:6], []string{"--adapter", "caddyfile"}) {
		t.Fatalf("ExecStart=%v: want <binary> run --config <Caddyfile> --adapter caddyfile", start)
	}
	if len(reload) < 6 || reload[0] != start[0] || reload[1] != "reload" || reload[2] != "--config" || reload[3] != start[3] || !slices.Equal(reload[4:6], []string{"--adapter", "caddyfile"}) {
		t.Errorf("ExecReload=%v: want %s reload --config %s --adapter caddyfile", reload, start[0], start[3])
	}
	if strings.Contains(u.get("Service", "ExecStart"), "--environ") {
		t.Error("ExecStart with --environ logs the environment")
	}

	// Caddy's directories are in the state directory, the only place
	// (with the runtime directory) the service may write.
	env := u.env()
	state := "/var/lib/" + u.get("Service", "StateDirectory")
	for _, k := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		if !under(env[k], state) {
			t.Errorf("%s=%q is not in the state directory %s", k, env[k], state)
		}
	}

	// The Caddyfile the unit runs: deploy/systemd/Caddyfile, installed at
	// the ExecStart's --config path (the unit's comment says so).
	if !strings.Contains(string(readFile(t, unitFile)), "deploy/systemd/Caddyfile "+start[3]) {
		t.Errorf("the unit does not say how deploy/systemd/Caddyfile becomes %s", start[3])
	}
	creds := u.credentials()
	if len(creds) == 0 {
		t.Fatal("no LoadCredential=")
	}
	credDir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)
	body := readFile(t, "systemd/Caddyfile")
	c := adapt(t, "systemd/Caddyfile", body)
	checkProxyConfinement(t, c)

	// Every file the configuration reads is a credential of the unit.
	var store struct {
		Module string `json:"module"`
		Auth   *struct {
			Method    string `json:"method"`
			TokenFile string `json:"token_file"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(c.Apps.OAuthConn.Store, &store)
	if store.Module != "vault" || store.Auth == nil || store.Auth.Method != "token_file" {
		t.Fatalf("the store is %s: want vault with auth token_file", c.Apps.OAuthConn.Store)
	}
	reads := []string{store.Auth.TokenFile}
	for _, m := range regexp.MustCompile(`\{file\.([^}]+)\}`).FindAllStringSubmatch(string(c.raw), -1) {
		reads = append(reads, m[1])
	}
	used := map[string]bool{}
	for _, f := range reads {
		name, ok := strings.CutPrefix(f, credDir+"/")
		if !ok || creds[name] == "" {
			t.Errorf("the Caddyfile reads %s, which is no credential of the unit (%v)", f, creds)
		}
		used[name] = true
	}
	for name := range creds {
		if !used[name] {
			t.Errorf("LoadCredential=%s is not read by the Caddyfile", name)
		}
	}
	if reads := string(c.raw); strings.Contains(reads, `"token":`) || strings.Contains(reads, "{env.VAULT_TOKEN}") {
		t.Error("the Vault token is given in the configuration or the environment, not as a credential")
	}

	// Outside systemd (caddy-oauthconn adapt by hand) the paths fall back
	// to where systemd puts this unit's credentials.
	t.Run("without CREDENTIALS_DIRECTORY", func(t *testing.T) {
		t.Setenv("CREDENTIALS_DIRECTORY", "")
		os.Unsetenv("CREDENTIALS_DIRECTORY")
		c := adapt(t, "systemd/Caddyfile", body)
		want := "/run/credentials/" + path.Base(unitFile) + "/"
		if !strings.Contains(string(c.raw), `"{file.`+want) {
			t.Errorf("with no CREDENTIALS_DIRECTORY the credentials are not read from %s", want)
		}
	})

	// With the credentials in place, every module provisions.
	t.Run("provision", func(t *testing.T) {
		for name := range creds {
			content := []byte("secret-" + name + "\n")
			if strings.HasSuffix(name, "password-hash") {
				var err error
				if content, err = bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(credDir, name), content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("VAULT_ADDR", "https://vault.example.com:8200")
		provision(t, "systemd/Caddyfile", c.raw)
	})

	// The admin endpoint is a socket in the runtime directory, which only
	// the service's user and root may enter.
	addr, err := caddy.ParseNetworkAddress(c.Admin.Listen)
	if err != nil || !addr.IsUnixNetwork() || !under(addr.Host, "/run/"+u.get("Service", "RuntimeDirectory")) {
		t.Errorf("admin %q: want a unix socket in /run/%s", c.Admin.Listen, u.get("Service", "RuntimeDirectory"))
	}
	if mode := u.get("Service", "RuntimeDirectoryMode"); mode != "0700" {
		t.Errorf("RuntimeDirectoryMode=%s: want 0700", mode)
	}
}

// TestSystemdAnalyze runs systemd's own checks on the unit: `verify` (any
// complaint fails, as it exits 0 on unknown settings) and `security`'s
// exposure score, with the binary's path replaced by one that exists.
func TestSystemdAnalyze(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian's systemd package has it): the unit is not verified")
	}
	u := parseUnit(t, string(readFile(t, unitFile)))
	bin := strings.Fields(u.get("Service", "ExecStart"))[0]
	dir := t.TempDir()
	fake := filepath.Join(dir, "caddy-oauthconn")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, path.Base(unitFile))
	text := strings.ReplaceAll(string(readFile(t, unitFile)), bin+" ", fake+" ")
	if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	verify := exec.Command(analyze, "verify", "--man=no", copyPath)
	out, err := verify.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// 0–100, shown divided by ten: 1.5 and below is "OK" or better.
	security := exec.Command(analyze, "security", "--offline=true", "--threshold=15", "--no-pager", copyPath)
	out, err = security.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	if i := bytes.Index(out, []byte("Overall exposure level")); i >= 0 {
		t.Log(string(bytes.TrimSpace(out[i:])))
	}
}
