package filestore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv/kvtest"
)

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, err := New(t.TempDir(), bytes.Repeat([]byte{7}, KeySize))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRecordsAreEncrypted(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "canary-access-token-31337"
	if _, err := s.Put(context.Background(), "tokens/demo/_shared", map[string]string{"access_token": secret}, 0); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the token in clear text", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The wrong key cannot read it, and says so without the plain text.
	other, _ := New(dir, bytes.Repeat([]byte{2}, KeySize))
	_, err = other.Get(context.Background(), "tokens/demo/_shared")
	if err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Fatalf("Get with wrong key: err = %v", err)
	}
}

func TestMovedRecordIsRejected(t *testing.T) {
	dir := t.TempDir()
	s, _ := New(dir, bytes.Repeat([]byte{1}, KeySize))
	ctx := context.Background()
	if _, err := s.Put(ctx, "tokens/a/_shared", map[string]string{"access_token": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	// A record copied to another path must not be readable there: the path
	// is bound into the seal.
	if err := os.MkdirAll(filepath.Join(dir, "tokens", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "tokens", "a", "_shared.rec"))
	if err := os.WriteFile(filepath.Join(dir, "tokens", "b", "_shared.rec"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "tokens/b/_shared"); err == nil {
		t.Fatal("record moved to another path was accepted")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "store.key")
	k1, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, k2) || len(k1) != KeySize {
		t.Fatal("second load did not return the generated key")
	}
}

// TestLoadOrCreateKeyConcurrently: processes starting at once agree on one
// key, and none reads a key file that is still being written.
func TestLoadOrCreateKeyConcurrently(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "store.key")
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = LoadOrCreateKey(p)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("caller %d got another key", i)
		}
	}
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "store.key" {
		t.Fatalf("key directory holds %v, want only store.key", ents)
	}
}

// TestWritesLeaveNoTemporaryFiles: a write and a delete leave exactly the
// record files, in directories created on the way.
func TestWritesLeaveNoTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := New(filepath.Join(dir, "new", "records"), bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := s.Put(ctx, "tokens/a/b", map[string]string{"k": "1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "tokens/a/b", map[string]string{"k": "2"}, v); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "tokens/a/c", map[string]string{"k": "3"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "tokens/a/c"); err != nil {
		t.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, dir))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.FromSlash("/new/records/tokens/a/b.rec")
	if len(files) != 1 || files[0] != want {
		t.Fatalf("files = %v, want [%s]", files, want)
	}
}

func TestDecodeKey(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
	}{
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false},
		{"AAAA", true},
		{"not base64!!", true},
	}
	for _, tt := range tests {
		_, err := DecodeKey(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("DecodeKey(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
		}
	}
}

func TestPathSegmentsAreChecked(t *testing.T) {
	s, _ := New(t.TempDir(), bytes.Repeat([]byte{1}, KeySize))
	for _, p := range []string{"tokens/../x", "tokens//x", "tokens/a\x00b"} {
		if _, err := s.Put(context.Background(), p, map[string]string{}, 0); err == nil {
			t.Errorf("Put(%q) succeeded", p)
		}
	}
}
