package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "oauthconn",
		Usage: "status|authorize|refresh|disconnect|import|doctor|version [--address <admin>] ...",
		Short: "Operates oauthconn connections through Caddy's admin API",
		Long: `
Operates the connections of a running caddy-oauthconn through its admin
endpoint, as caddy reload does for configuration.

  oauthconn status [--subject S]              connectors and their status
  oauthconn authorize <connector>             prints where to authorize
  oauthconn refresh <connector> [--subject S] refreshes now
  oauthconn disconnect <connector> [--subject S]
                                              revokes and deletes
  oauthconn import <connector> [--subject S]  stores a refresh token read
                                              from stdin (typed at a terminal:
                                              not echoed), then redeems it
  oauthconn doctor [<connector>]              checks endpoints, metadata, the
                                              redirect URI and the store
  oauthconn version                           this module's and Caddy's versions

--address is the admin endpoint (default: localhost:2019).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Args = cobra.RangeArgs(0, 2)
			cmd.Flags().String("address", "", "The address of the admin endpoint")
			cmd.Flags().String("subject", "", "The subject of a per-user connector")
			cmd.RunE = runOAuthConn
		},
	})
}

func cmdOAuthConn(fs caddycmd.Flags) (int, error) {
	args := fs.Args()
	addr, err := caddycmd.DetermineAdminAPIAddress(fs.String("address"), nil, "", "")
	if err != nil {
		return failCmd(err)
	}
	subject := fs.String("subject")
	q := ""
	if subject != "" {
		q = "?subject=" + url.QueryEscape(subject)
	}
	need := func() (string, error) {
		if len(args) < 2 {
			return "", fmt.Errorf("oauthconn %s needs a connector name", args[0])
		}
		return url.PathEscape(args[1]), nil
	}
	var method, uri string
	var body io.Reader
	switch args[0] {
	case "status":
		method, uri = http.MethodGet, "/oauthconn/connectors"+q
	case "authorize":
		name, err := need()
		if err != nil {
			return failCmd(err)
		}
		return printAuthorizeURL(addr, name, q)
	case "refresh":
		name, err := need()
		if err != nil {
			return failCmd(err)
		}
		method, uri = http.MethodPost, "/oauthconn/connectors/"+name+"/refresh"+q
	case "disconnect":
		name, err := need()
		if err != nil {
			return failCmd(err)
		}
		method, uri = http.MethodDelete, "/oauthconn/connectors/"+name+q
	case "import":
		name, err := need()
		if err != nil {
			return failCmd(err)
		}
		rt, err := readRefreshToken(os.Stdin, os.Stderr, args[1])
		if err != nil {
			return failCmd(err)
		}
		b, _ := json.Marshal(map[string]string{"refresh_token": rt, "subject": subject})
		method, uri, body = http.MethodPost, "/oauthconn/connectors/"+name+"/import", bytes.NewReader(b)
	default:
		return failCmd(fmt.Errorf("unknown oauthconn command %q (status, authorize, refresh, disconnect, import)", args[0]))
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, http.Header{"Content-Type": {"application/json"}}, body)
	if err != nil {
		return failCmd(err)
	}
	defer resp.Body.Close()
	_, err = io.Copy(os.Stdout, resp.Body)
	if err != nil {
		return failCmd(err)
	}
	return 0, nil
}

// maxRefreshToken bounds the refresh token read; real ones are far shorter.
const maxRefreshToken = 64 << 10

// readRefreshToken reads the refresh token to import from in: at a
// terminal, one line typed with echo off after a prompt on prompt, so that
// the token is never shown (nor kept in scrollback or a session recording);
// otherwise (a pipe, a file) all of it.
func readRefreshToken(in *os.File, prompt io.Writer, connector string) (string, error) {
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		fmt.Fprintf(prompt, "Refresh token for %s (not shown): ", connector)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("reading the refresh token: %w", err)
		}
		if len(b) > maxRefreshToken {
			return "", errors.New("the refresh token is too long")
		}
		return nonEmpty(b)
	}
	b, err := io.ReadAll(io.LimitReader(in, maxRefreshToken))
	if err != nil {
		return "", fmt.Errorf("reading the refresh token: %w", err)
	}
	return nonEmpty(b)
}

func nonEmpty(b []byte) (string, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 {
		return string(t), nil
	}
	return "", errNoRefreshToken
}

func printAuthorizeURL(addr, name, q string) (int, error) {
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, "/oauthconn/connectors"+q, nil, nil)
	if err != nil {
		return failCmd(err)
	}
	defer resp.Body.Close()
	var list []connectorStatus
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return failCmd(err)
	}
	for _, c := range list {
		if url.PathEscape(c.Name) == name {
			if c.AuthorizeURL == "" {
				return failCmd(fmt.Errorf("connector %s is %s", c.Name, c.Status))
			}
			fmt.Println(c.AuthorizeURL)
			return 0, nil
		}
	}
	return failCmd(fmt.Errorf("unknown connector %s", name))
}

// failCmd fails a command with exit status 1.
func failCmd(err error) (int, error) { return caddy.ExitCodeFailedStartup, err }
