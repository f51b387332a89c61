package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestExampleAnswers404: the example Caddyfile answers 404 outside its
// routes, on the connect site and on the proxy, rather than Caddy's empty
// 200.
func TestExampleAnswers404(t *testing.T) {
	b, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	connect, proxy := freePort(t), freePort(t)
	src := strings.Replace(string(b), "{\n\toauthconn {", "{\n\tadmin off\n\tpersist_config off\n\toauthconn {", 1)
	src = strings.ReplaceAll(src, "localhost:8080", fmt.Sprintf("localhost:%d", connect))
	src = strings.ReplaceAll(src, "127.0.0.1:8081", fmt.Sprintf("127.0.0.1:%d", proxy))
	cfg, err := adapt(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	for _, u := range []string{
		fmt.Sprintf("http://localhost:%d/nothing", connect),
		fmt.Sprintf("http://127.0.0.1:%d/nothing", proxy),
	} {
		if resp, body := newClient().do(t, "GET", u, nil, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %q", u, resp.StatusCode, body)
		}
	}
	if resp, _ := newClient().do(t, "GET", fmt.Sprintf("http://localhost:%d/oauth/", connect), nil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("the connect page: %d", resp.StatusCode)
	}
}
