// Command healthcheck is the container image's HEALTHCHECK: it GETs one URL
// and exits 0 if the answer is 2xx, 1 otherwise. The image has no shell, curl
// or wget, and caddy-oauthconn itself cannot fetch a URL.
//
//	healthcheck [url]
//
// The URL defaults to $OAUTHCONN_HEALTHCHECK_URL, then to
// http://127.0.0.1:8080/oauth/livez. Proxy variables are ignored and
// redirects are not followed, so the answer is the server's own.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

const defaultURL = "http://127.0.0.1:8080/oauth/livez"

func main() {
	url := os.Getenv("OAUTHCONN_HEALTHCHECK_URL")
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if url == "" {
		url = defaultURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := check(ctx, url); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// check GETs url and says why it is not healthy, if it is not.
func check(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
