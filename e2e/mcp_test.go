package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/mcpdev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// mcpCaddyfile is the README's "MCP servers" configuration, with the test
// Vault as the store.
const mcpCaddyfile = `{
	admin localhost:2999
	oauthconn {
		public_url http://localhost:9080
		store vault {
			address {env.VAULT_ADDR}
			token {env.VAULT_TOKEN}
			mount secret
			prefix %[1]s
		}
		connector linear {
			resource %[2]s
		}
	}
}

http://localhost:9080 {
	oauthconn_connect /oauth/*
	handle_path /mcp/* {
		oauthconn_proxy linear
	}
}
`

// TestMCPServerWithNoRegistration configures a connector with only the MCP
// server's URL. The proxy discovers the real Hydra from the server's
// challenge and metadata, registers a client there, a person connects, and
// an MCP client (the official SDK) with no credentials lists and calls
// tools through the proxy; a streamed tool call arrives in pieces, and the
// access token (6 s) is refreshed during the session.
func TestMCPServerWithNoRegistration(t *testing.T) {
	h := newHydra(t)
	srv, err := mcpdev.Start(mcpdev.Options{HydraPublicURL: h.PublicURL, HydraAdminURL: h.AdminURL, Scopes: []string{"offline_access"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	testservices.Vault(t)
	prefix := "e2e-mcp-" + hydradev.RandomHex(6)
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(mcpCaddyfile, prefix, srv.Resource), "caddyfile")

	// Before anybody connects, the MCP client is told that a person must
	// authorize.
	resp, err := http.Post("http://localhost:9080/mcp/", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("before connecting: %d", resp.StatusCode)
	}

	b := newBrowser()
	resp2, body := b.do(t, "GET", "http://localhost:9080/oauth/connectors/linear/authorize", "", "")
	if resp2.StatusCode != http.StatusOK || !strings.Contains(body, "linear is connected") {
		t.Fatalf("connect: %d at %s: %s", resp2.StatusCode, resp2.Request.URL, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var mu sync.Mutex
	var progress []time.Time
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, _ *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, time.Now())
			mu.Unlock()
		},
	})
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://localhost:9080/mcp/"}, nil)
	if err != nil {
		t.Fatalf("MCP client through the proxy: %v", err)
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) != 2 {
		t.Fatalf("tools: %v, %v", tools, err)
	}
	whoami := func() string {
		t.Helper()
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
		if err != nil || res.IsError || len(res.Content) != 1 {
			t.Fatalf("whoami: %+v, %v", res, err)
		}
		return res.Content[0].(*mcp.TextContent).Text
	}
	if got := whoami(); got != "user:alice" {
		t.Fatalf("whoami = %q", got)
	}

	// A streamed call: the progress notifications arrive while the tool
	// runs, not all at the end.
	params := &mcp.CallToolParams{Name: "count", Arguments: map[string]any{"n": 5}}
	params.SetProgressToken("count-1")
	res, err := session.CallTool(ctx, params)
	done := time.Now()
	if err != nil || res.IsError {
		t.Fatalf("count: %+v, %v", res, err)
	}
	mu.Lock()
	got := append([]time.Time(nil), progress...)
	mu.Unlock()
	if len(got) != 5 {
		t.Fatalf("%d progress notifications, want 5", len(got))
	}
	if first := done.Sub(got[0]); first < 900*time.Millisecond {
		t.Fatalf("the first progress notification arrived %v before the result: the stream was buffered", first)
	}

	// The access token lives 6 s: calls keep working across its refresh.
	time.Sleep(7 * time.Second)
	if got := whoami(); got != "user:alice" {
		t.Fatalf("whoami after expiry = %q", got)
	}
	if n := len(srv.Tokens()); n < 2 {
		t.Fatalf("the MCP server saw %d access tokens, want the refreshed one too", n)
	}
	if n := srv.Refused(); n != 0 {
		t.Fatalf("the MCP server refused %d requests", n)
	}
}
