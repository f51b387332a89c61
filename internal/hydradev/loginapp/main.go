// Command loginapp is the login and consent app of the development Hydra
// that scripts/services.sh starts: it logs every browser in as one user and
// grants every requested scope.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
)

func main() {
	addr := flag.String("addr", os.Getenv("HYDRA_LOGIN_ADDR"), "address to serve /login and /consent on")
	subject := flag.String("subject", "alice", "the user everybody logs in as")
	flag.Parse()
	h := hydradev.Hydra{PublicURL: os.Getenv("HYDRA_PUBLIC_URL"), AdminURL: os.Getenv("HYDRA_ADMIN_URL")}
	if _, err := h.ServeLogin(*addr, *subject); err != nil {
		log.Fatal(err)
	}
	select {}
}
