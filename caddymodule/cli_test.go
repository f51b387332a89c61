package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// runCLI runs `oauthconn args...` as the binary would, returning its
// stdout, stderr and error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var def caddycmd.Command
	for _, c := range caddycmd.Commands() {
		if c.Name == "oauthconn" {
			def = c
		}
	}
	if def.CobraFunc == nil {
		t.Fatal("the oauthconn command is not registered")
	}
	cmd := &cobra.Command{Use: def.Name, Long: def.Long}
	def.CobraFunc(cmd)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestCLIBarePrintsUsage: oauthconn without arguments explains itself
// rather than failing on the number of arguments.
func TestCLIBarePrintsUsage(t *testing.T) {
	out, errOut, err := runCLI(t)
	if err != nil || !strings.Contains(out, "oauthconn status") {
		t.Fatalf("err %v\nstdout %q\nstderr %q", err, out, errOut)
	}
}

// TestCLIErrorsArePlain: an admin API error answer is printed as one plain
// line with its message, not as JSON inside a log line.
func TestCLIErrorsArePlain(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"unknown connector \"nope\""}`+"\n")
	}))
	defer admin.Close()
	_, errOut, err := runCLI(t, "refresh", "nope", "--address", strings.TrimPrefix(admin.URL, "http://"))
	if err == nil {
		t.Fatal("no error")
	}
	if want := "caddy-oauthconn oauthconn refresh: unknown connector \"nope\" (admin API status 404)\n"; errOut != want {
		t.Fatalf("stderr %q, want %q", errOut, want)
	}
}

// TestImportEmptyStdin: oauthconn import with nothing on stdin says that no
// refresh token was given, rather than sending an empty one.
func TestImportEmptyStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Close()
	if _, err := readRefreshToken(r, io.Discard, "demo"); !errors.Is(err, errNoRefreshToken) {
		t.Fatalf("empty stdin: %v", err)
	}
}

// TestCLIVersion: oauthconn version names this module's version and
// Caddy's.
func TestCLIVersion(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(out, "caddy-oauthconn ") || !strings.Contains(out, "\ncaddy ") {
		t.Fatalf("%q, %v", out, err)
	}
	dep := &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{{Path: modulePath, Version: "v1.2.3"}}}
	if v := moduleVersion(dep); v != "v1.2.3" {
		t.Fatalf("as a dependency: %q", v)
	}
	main := &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}
	if v := moduleVersion(main); v != "(devel) 0123456789ab (modified)" {
		t.Fatalf("as the main module: %q", v)
	}
}

// TestCLIDoctor: oauthconn doctor asks the admin API for the findings of
// one connector, prints one line each with the fix, and fails when one is
// an error.
func TestCLIDoctor(t *testing.T) {
	var asked string
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.RequestURI()
		io.WriteString(w, `{"findings":[{"level":"ok","connector":"demo","check":"authorization_url","message":"answers"},`+
			`{"level":"error","connector":"demo","check":"token_url","message":"answers 404","fix":"set token_url to X"}]}`)
	}))
	defer admin.Close()
	out, _, err := runCLI(t, "doctor", "demo", "--address", strings.TrimPrefix(admin.URL, "http://"))
	if !errors.Is(err, errDoctorFound) {
		t.Fatalf("err %v", err)
	}
	if asked != "/oauthconn/doctor?connector=demo" {
		t.Fatalf("asked %s", asked)
	}
	want := "OK    demo authorization_url: answers\nERROR demo token_url: answers 404 — fix: set token_url to X\n"
	if out != want {
		t.Fatalf("stdout %q, want %q", out, want)
	}
}
