// Command demoapp is the offline demo's side of the world for scripts/demo:
// it registers an OAuth 2.0 client for the proxy at the development Hydra
// (whose login app scripts/services.sh runs), serves an API that accepts
// only Hydra's tokens, and prints the
// environment the proxy needs (AS_AUTH_URL, AS_TOKEN_URL, AS_CLIENT_ID,
// AS_CLIENT_SECRET, DEMO_UPSTREAM) as shell exports on its first lines.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
)

func main() {
	api := flag.String("api", "127.0.0.1:9090", "address of the demo API")
	callback := flag.String("callback", "http://localhost:8080/oauth/callback", "the proxy's callback URL")
	flag.Parse()
	h := hydradev.Hydra{PublicURL: os.Getenv("HYDRA_PUBLIC_URL"), AdminURL: os.Getenv("HYDRA_ADMIN_URL")}
	c, err := h.CreateClient(*callback, "client_secret_basic")
	if err != nil {
		log.Fatalf("registering the client: %v", err)
	}
	ln, err := net.Listen("tcp", *api)
	if err != nil {
		log.Fatalf("demo API: %v", err)
	}
	fmt.Printf("export AS_AUTH_URL=%s/oauth2/auth AS_TOKEN_URL=%s/oauth2/token\n", h.PublicURL, h.PublicURL)
	fmt.Printf("export AS_CLIENT_ID=%s AS_CLIENT_SECRET=%s\n", c.ID, c.Secret)
	fmt.Printf("export DEMO_UPSTREAM=http://%s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, &hydradev.API{Hydra: h}))
}
