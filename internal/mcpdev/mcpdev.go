// Package mcpdev is a real MCP server for the tests, built with the official
// MCP Go SDK: its Streamable HTTP endpoint is protected by access tokens of
// the test Ory Hydra (validated by introspection at Hydra's admin API), it
// serves its protected resource metadata (RFC 9728) and answers requests
// without a valid token with the Bearer challenge that points at it.
package mcpdev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// Server is a running MCP server.
type Server struct {
	// Resource is the MCP endpoint's URL, the protected resource's
	// identifier.
	Resource string
	// MetadataURL is where the resource's metadata is served.
	MetadataURL string

	srv      *http.Server
	verified atomic.Int64
	refused  atomic.Int64
	tokens   chan string
}

// Options configures a Server.
type Options struct {
	// HydraPublicURL is the authorization server named in the metadata.
	HydraPublicURL string
	// HydraAdminURL is where tokens are introspected.
	HydraAdminURL string
	// Scopes are the resource's scopes_supported.
	Scopes []string
	// Metadata, if set, rewrites the resource metadata before it is
	// served (to test refusals).
	Metadata func(*oauthex.ProtectedResourceMetadata)
}

// Start serves the MCP server on a loopback port, at /mcp.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	base := "http://" + ln.Addr().String()
	s := &Server{Resource: base + "/mcp", MetadataURL: base + "/.well-known/oauth-protected-resource/mcp", tokens: make(chan string, 1024)}

	server := mcp.NewServer(&mcp.Implementation{Name: "mcpdev", Version: "1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Says which user the token is for."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			user := ""
			if ti := req.Extra.TokenInfo; ti != nil {
				user = ti.UserID
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "user:" + user}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "count", Description: "Counts to n, one progress notification every 300 ms."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct {
			N int `json:"n"`
		}) (*mcp.CallToolResult, any, error) {
			for i := 1; i <= in.N; i++ {
				if tok := req.Params.GetProgressToken(); tok != nil {
					req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: float64(in.N)})
				}
				select {
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				case <-time.After(300 * time.Millisecond):
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("counted to %d", in.N)}}}, nil, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)

	meta := &oauthex.ProtectedResourceMetadata{
		Resource:               s.Resource,
		AuthorizationServers:   []string{o.HydraPublicURL},
		ScopesSupported:        o.Scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "mcpdev",
	}
	if o.Metadata != nil {
		o.Metadata(meta)
	}
	verify := func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		ti, err := introspect(ctx, o.HydraAdminURL, token)
		if err != nil {
			s.refused.Add(1)
			return nil, err
		}
		s.verified.Add(1)
		select {
		case s.tokens <- token:
		default:
		}
		return ti, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(meta))
	mux.Handle("/mcp", auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: s.MetadataURL})(handler))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Verified is how many requests carried a token Hydra called active.
func (s *Server) Verified() int64 { return s.verified.Load() }

// Refused is how many requests carried a token that was refused.
func (s *Server) Refused() int64 { return s.refused.Load() }

// Tokens returns the distinct access tokens the server accepted so far.
func (s *Server) Tokens() []string {
	seen := map[string]bool{}
	var out []string
	for {
		select {
		case t := <-s.tokens:
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		default:
			return out
		}
	}
}

// introspect asks Hydra's admin API (RFC 7662) whether token is active.
func introspect(ctx context.Context, adminURL, token string) (*auth.TokenInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, adminURL+"/admin/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", auth.ErrInvalidToken, err)
	}
	defer resp.Body.Close()
	var out struct {
		Active bool   `json:"active"`
		Sub    string `json:"sub"`
		Scope  string `json:"scope"`
		Exp    int64  `json:"exp"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", auth.ErrInvalidToken, err)
	}
	if !out.Active {
		return nil, fmt.Errorf("%w: not active", auth.ErrInvalidToken)
	}
	if out.Exp == 0 {
		return nil, errors.Join(auth.ErrInvalidToken, errors.New("no expiry"))
	}
	return &auth.TokenInfo{UserID: out.Sub, Scopes: strings.Fields(out.Scope), Expiration: time.Unix(out.Exp, 0)}, nil
}
