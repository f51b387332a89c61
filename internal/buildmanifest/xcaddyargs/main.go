// Command xcaddyargs prints the xcaddy arguments that xcaddy.toml asks for,
// one per line, for `make xcaddy`.
package main

import (
	"fmt"
	"os"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/buildmanifest"
)

func main() {
	path := "xcaddy.toml"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	m, err := buildmanifest.Parse(string(b))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, a := range m.XcaddyArgs() {
		fmt.Println(a)
	}
}
