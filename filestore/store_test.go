package filestore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
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
