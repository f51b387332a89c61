package vault

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// TestMissingVersionDataIsRepaired removes the data of a record's current
// version behind Vault's back, as a delete interrupted half way leaves it,
// and checks that the record reads as missing at its current version and
// that a check-and-set write at that version repairs it. Removing the data
// needs Vault's raw storage endpoint (raw_storage_endpoint = true); the test
// is skipped on a Vault without it.
func TestMissingVersionDataIsRepaired(t *testing.T) {
	env := testservices.Vault(t)
	root, err := api.NewClient(&api.Config{Address: env.Addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(env.Token)
	if sec, err := root.Logical().List("sys/raw/logical"); err != nil || sec == nil {
		t.Skip("the test Vault does not enable raw_storage_endpoint")
	}
	// A KV mount of its own, so that the only version data in its storage
	// is this test's record.
	mount := "kv-repair-" + hydradev.RandomHex(4)
	if err := root.Sys().Mount(mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	defer root.Sys().Unmount(mount)
	mounts, err := root.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Address: env.Addr, Token: env.Token, Mount: mount})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A new KV v2 mount refuses writes while it sets itself up.
	var v int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if v, err = s.Put(ctx, "tokens/demo", map[string]string{"a": "1"}, 0); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}

	var versions []string
	var walk func(dir string)
	walk = func(dir string) {
		sec, err := root.Logical().List("sys/raw/" + dir)
		if err != nil || sec == nil {
			t.Fatalf("listing raw storage %s: %v", dir, err)
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			switch {
			case strings.HasSuffix(name, "/"):
				walk(dir + name)
			case strings.Contains(dir, "/versions/"):
				versions = append(versions, dir+name)
			}
		}
	}
	walk("logical/" + mounts[mount+"/"].UUID + "/")
	if len(versions) != 1 {
		t.Fatalf("found %d version data entries in the mount's storage, want 1: %q", len(versions), versions)
	}
	if _, err := root.Logical().Delete("sys/raw/" + versions[0]); err != nil {
		t.Fatal(err)
	}

	e, err := s.Get(ctx, "tokens/demo")
	if !errors.Is(err, kv.ErrNotFound) || e.Version != v {
		t.Fatalf("Get of a record without version data = %+v, %v; want not found at version %d", e, err, v)
	}
	if _, err := s.Put(ctx, "tokens/demo", map[string]string{"a": "2"}, e.Version); err != nil {
		t.Fatalf("repairing write: %v", err)
	}
	if e, err := s.Get(ctx, "tokens/demo"); err != nil || e.Data["a"] != "2" {
		t.Fatalf("Get after the repair = %+v, %v", e, err)
	}
}
