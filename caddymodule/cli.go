package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// runOAuthConn runs `caddy-oauthconn oauthconn`. It prints its own errors
// as one plain line on stderr: Caddy's command wrapper would log them as
// JSON, with the admin API's JSON answer escaped inside, which is hard to
// read at a terminal and not what a script expects.
func runOAuthConn(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true
	if len(args) == 0 {
		// Bare, the command is a question about what it does.
		return cmd.Help()
	}
	var err error
	switch args[0] {
	case "version":
		fmt.Fprintln(cmd.OutOrStdout(), versionText())
		return nil
	case "doctor":
		err = runDoctor(cmd, args[1:])
	default:
		_, err = cmdOAuthConn(caddycmd.Flags{FlagSet: cmd.Flags()})
	}
	if err != nil {
		cmd.SilenceErrors = true
		fmt.Fprintln(cmd.ErrOrStderr(), "caddy-oauthconn oauthconn "+args[0]+": "+plainError(err))
	}
	return err
}

// adminAnswer matches the error caddycmd.AdminAPIRequest makes of an
// admin API error answer.
var adminAnswer = regexp.MustCompile(`^caddy responded with error: HTTP (\d+): (\{.*\})\s*$`)

// plainError is err's message, with an admin API error answer reduced to
// its status and message.
func plainError(err error) string {
	msg := err.Error()
	m := adminAnswer.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(m[2]), &body) != nil || body.Error == "" {
		return msg
	}
	return body.Error + " (admin API status " + m[1] + ")"
}

// modulePath is this module's import path, looked up in the build info.
const modulePath = "github.com/caddy-oauthconn/caddy-oauthconn"

// versionText names this module's version, as the Go toolchain recorded it
// in the binary, and Caddy's.
func versionText() string {
	caddyVersion, _ := caddy.Version()
	mod := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		mod = moduleVersion(bi)
	}
	return "caddy-oauthconn " + mod + "\ncaddy " + caddyVersion
}

// moduleVersion finds this module in bi: the main module when the binary
// is built in this repository (with the VCS revision when there is one),
// else a dependency (an xcaddy build).
func moduleVersion(bi *debug.BuildInfo) string {
	if bi.Main.Path == modulePath {
		v := bi.Main.Version
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && (v == "" || v == "(devel)") {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			v = strings.TrimSpace(v + " " + rev)
			if modified == "true" {
				v += " (modified)"
			}
		}
		return v
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath {
			if d.Replace != nil {
				return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

// errNoRefreshToken is returned by oauthconn import when stdin was empty.
var errNoRefreshToken = errors.New("no refresh token was given: pipe it on stdin (caddy-oauthconn oauthconn import <connector> < token-file) or type it at the prompt")

// errDoctorFound makes oauthconn doctor exit with status 1 when it found an
// error; the findings themselves are already printed.
var errDoctorFound = errors.New("found problems; see the lines marked ERROR")

// runDoctor asks the running process to check its configuration and prints
// one line per finding, with the fix for each problem.
func runDoctor(cmd *cobra.Command, args []string) error {
	addr, err := caddycmd.DetermineAdminAPIAddress(cmd.Flags().Lookup("address").Value.String(), nil, "", "")
	if err != nil {
		return err
	}
	uri := "/oauthconn/doctor"
	if len(args) > 0 {
		uri += "?connector=" + url.QueryEscape(args[0])
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, uri, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Findings []finding `json:"findings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("reading the doctor's findings: %w", err)
	}
	failed := printFindings(cmd.OutOrStdout(), out.Findings)
	if failed {
		return errDoctorFound
	}
	return nil
}

// printFindings prints one line per finding and reports whether any is an
// error.
func printFindings(w io.Writer, findings []finding) bool {
	failed := false
	for _, f := range findings {
		where := f.Check
		if f.Connector != "" {
			where = f.Connector + " " + f.Check
		}
		line := fmt.Sprintf("%-5s %s: %s", strings.ToUpper(f.Level), where, f.Message)
		if f.Fix != "" && f.Level != "ok" {
			line += " — fix: " + f.Fix
		}
		fmt.Fprintln(w, line)
		failed = failed || f.Level == "error"
	}
	return failed
}
