package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/discovery"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/mcpdev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/vault"
)

// TestDiscoverHydraThroughMCPServer discovers the real Ory Hydra from a
// real MCP server's challenge and metadata.
func TestDiscoverHydraThroughMCPServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Hydra")
	}
	h := testservices.Hydra(t)
	srv, err := mcpdev.Start(mcpdev.Options{HydraPublicURL: h.PublicURL, HydraAdminURL: h.AdminURL, Scopes: []string{"offline_access"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := discovery.Discover(context.Background(), &http.Client{}, srv.Resource, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Issuer != h.PublicURL || res.TokenURL != h.PublicURL+"/oauth2/token" || res.AuthURL != h.PublicURL+"/oauth2/auth" ||
		res.RegistrationURL != h.PublicURL+"/oauth2/register" || res.ResourceMetadataURL != srv.MetadataURL {
		t.Fatalf("result = %+v", res)
	}
}

func vaultStore(t *testing.T) kv.Store {
	v := testservices.Vault(t)
	s, err := vault.New(vault.Config{Address: v.Addr, Token: v.Token, Prefix: "oauthconn-discovery-" + hydradev.RandomHex(4)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hydraClients lists the clients registered at Hydra with the given name.
func hydraClients(t *testing.T, admin, name string) []string {
	resp, err := http.Get(admin + "/admin/clients?client_name=" + url.QueryEscape(name))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range out {
		ids = append(ids, c.ClientID)
	}
	return ids
}

// TestTwoReplicasRegisterOneClient has two registrars, as two replicas
// sharing the real Vault, ask for the connector's client at once: the real
// Hydra registers exactly one, and both use it.
func TestTwoReplicasRegisterOneClient(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Hydra and Vault")
	}
	h := testservices.Hydra(t)
	store := vaultStore(t)
	name := "oauthconn-test-" + hydradev.RandomHex(6)
	reg := discovery.Registration{Endpoint: h.PublicURL + "/oauth2/register", Issuer: h.PublicURL,
		RedirectURI: "http://127.0.0.1:9/oauth/callback", Name: name, Scope: "offline_access"}
	var wg sync.WaitGroup
	got := make([]discovery.Client, 4)
	errs := make([]error, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &discovery.Registrar{Store: store, HTTP: &http.Client{}, Holder: "replica-" + string(rune('a'+i%2))}
			got[i], errs[i] = r.Client(context.Background(), "linear", reg)
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i].ID == "" || got[i].ID != got[0].ID || got[i].Secret != got[0].Secret {
			t.Fatalf("replicas use different clients: %q and %q", got[i].ID, got[0].ID)
		}
	}
	if ids := hydraClients(t, h.AdminURL, name); len(ids) != 1 || ids[0] != got[0].ID {
		t.Fatalf("Hydra registered %v, want exactly [%s]", ids, got[0].ID)
	}
	e, err := store.Get(context.Background(), "clients/linear")
	if err != nil || e.Data["client_id"] != got[0].ID || e.Data["issuer"] != h.PublicURL {
		t.Fatalf("store holds %v, %v", e.Data["client_id"], err)
	}

	// The server forgets the client: the next use registers a new one,
	// once.
	r := &discovery.Registrar{Store: store, HTTP: &http.Client{}, Holder: "replica-a"}
	if err := r.Forget(context.Background(), "linear", got[0].ID); err != nil {
		t.Fatal(err)
	}
	again, err := r.Client(context.Background(), "linear", reg)
	if err != nil || again.ID == got[0].ID {
		t.Fatalf("after forgetting: %q, %v", again.ID, err)
	}
	if ids := hydraClients(t, h.AdminURL, name); len(ids) != 2 {
		t.Fatalf("Hydra has %d clients named %s, want 2", len(ids), name)
	}
}

// TestRegistrationRefusedStoresNothing has Hydra refuse the registration
// (a redirect URI with a fragment): the error says so, without the
// response body, and no client is stored.
func TestRegistrationRefusedStoresNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Hydra and Vault")
	}
	h := testservices.Hydra(t)
	store := vaultStore(t)
	r := &discovery.Registrar{Store: store, HTTP: &http.Client{}, Holder: "a"}
	_, err := r.Client(context.Background(), "bad", discovery.Registration{Endpoint: h.PublicURL + "/oauth2/register",
		Issuer: h.PublicURL, RedirectURI: "http://127.0.0.1:9/cb#fragment", Name: "oauthconn-bad"})
	if !errors.Is(err, discovery.ErrRegistration) || !strings.Contains(err.Error(), "invalid_redirect_uri") {
		t.Fatalf("err = %v", err)
	}
	e, err := store.Get(context.Background(), "clients/bad")
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		t.Fatal(err)
	}
	if e.Data["client_id"] != "" || e.Data["client_secret"] != "" {
		t.Fatalf("store holds a client after a refused registration: %v", e.Data)
	}
}
