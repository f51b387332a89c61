// Command vault is HashiCorp Vault's own command, built from its Go module so
// that tests can start a real Vault server without a binary download.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
