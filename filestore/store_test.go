package filestore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// The record, and the lock file that serializes writes.
	want := []string{filepath.FromSlash("/new/records/" + lockName), filepath.FromSlash("/new/records/tokens/a/b.rec")}
	if !slices.Equal(files, want) {
		t.Fatalf("files = %v, want %v", files, want)
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

// subjectPath is the record path of a per-user connection, built as package
// tokens builds it: the subject escaped into one segment.
func subjectPath(subject string) string {
	return "tokens/demo/" + url.PathEscape(subject)
}

// TestLongSubjects: the longest subjects the proxy accepts (512 bytes;
// non-ASCII characters, escaped twice on the way to a file name, grow 5x)
// are stored under hashed file names and behave like any other record.
func TestLongSubjects(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	subjects := []string{
		strings.Repeat("a", 512),
		strings.Repeat("€", 170), // 3 bytes each: 510 bytes
		"alice",
		"#" + strings.Repeat("0", 64), // looks like a hashed name, but short
	}
	want := make([]string, len(subjects))
	for i, sub := range subjects {
		p := subjectPath(sub)
		want[i] = path.Base(p)
		v, err := s.Put(ctx, p, map[string]string{"access_token": fmt.Sprint("t", i)}, 0)
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
		if _, err := s.Put(ctx, p, map[string]string{"access_token": fmt.Sprint("u", i)}, v); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	if _, err := s.Put(ctx, "tokens/demo", map[string]string{"shared": "1"}, 0); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subjects {
		e, err := s.Get(ctx, subjectPath(sub))
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if e.Version != 2 || e.Data["access_token"] != fmt.Sprint("u", i) {
			t.Fatalf("Get %d = %+v", i, e)
		}
	}
	hashedFiles := 0
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && len(d.Name()) > maxName+len(ext) {
			t.Errorf("file name of %d bytes: %s", len(d.Name()), p)
		}
		if err == nil && strings.HasPrefix(d.Name(), hashPrefix) {
			hashedFiles++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if hashedFiles != 2 {
		t.Fatalf("%d hashed file names, want 2 (the long subjects)", hashedFiles)
	}
	names, err := s.List(ctx, "tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("List = %q\nwant %q", names, want)
	}
	for i, sub := range subjects[:2] {
		if err := s.Delete(ctx, subjectPath(sub)); err != nil {
			t.Fatalf("Delete %d: %v", i, err)
		}
		if _, err := s.Get(ctx, subjectPath(sub)); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get %d after Delete: err = %v", i, err)
		}
	}
	names, err = s.List(ctx, "tokens/demo")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	left := []string{path.Base(subjectPath(subjects[2])), path.Base(subjectPath(subjects[3]))}
	slices.Sort(left)
	if !slices.Equal(names, left) {
		t.Fatalf("List after deletes = %q, want %q", names, left)
	}
}

// TestLongDirectory: a long segment in the middle of a path names a
// directory the same way, and listing it works.
func TestLongDirectory(t *testing.T) {
	s, _ := New(t.TempDir(), bytes.Repeat([]byte{1}, KeySize))
	ctx := context.Background()
	long := strings.Repeat("é", 200)
	for _, p := range []string{"x/" + long + "/one", "x/" + long + "/" + long} {
		if _, err := s.Put(ctx, p, map[string]string{"a": "b"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	names, err := s.List(ctx, "x/"+long)
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"one", long}) {
		t.Fatalf("List = %q, %v", names, err)
	}
	if names, err := s.List(ctx, "x"); err != nil || len(names) != 0 {
		t.Fatalf("List(x) = %q, %v; want nothing", names, err)
	}
}

func TestFileNameLength(t *testing.T) {
	if n, hashed := fileName(strings.Repeat("a", maxName)); hashed || n != strings.Repeat("a", maxName) {
		t.Errorf("a %d-byte segment was hashed", maxName)
	}
	n, hashed := fileName(strings.Repeat("a", maxName+1))
	if !hashed || !strings.HasPrefix(n, hashPrefix) || len(n) != len(hashPrefix)+64 {
		t.Errorf("a %d-byte segment is stored as %q", maxName+1, n)
	}
	// The escaped length counts: 67 characters of 3 bytes escape to 201.
	if _, hashed := fileName(strings.Repeat("€", 67)); !hashed {
		t.Error("a segment escaping to 201 bytes was not hashed")
	}
}

// TestHashedRecordsAreBound: a hashed record copied over another hashed
// record, or into another directory, is refused by Get and by List.
func TestHashedRecordsAreBound(t *testing.T) {
	dir := t.TempDir()
	s, _ := New(dir, bytes.Repeat([]byte{1}, KeySize))
	ctx := context.Background()
	a, b := strings.Repeat("a", 300), strings.Repeat("b", 300)
	for _, p := range []string{"d/" + a, "d/" + b, "e/" + a} {
		if _, err := s.Put(ctx, p, map[string]string{"who": p[:3]}, 0); err != nil {
			t.Fatal(err)
		}
	}
	fa, _ := fileName(a)
	fb, _ := fileName(b)
	copyFile := func(from, to string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("d/"+fa+ext, "d/"+fb+ext)
	if _, err := s.Get(ctx, "d/"+b); err == nil || !strings.Contains(err.Error(), "tampered") {
		t.Fatalf("Get of a record copied over another: err = %v", err)
	}
	if _, err := s.List(ctx, "d"); err == nil {
		t.Fatal("List accepted a record copied over another")
	}
	copyFile("d/"+fa+ext, "e/"+fa+ext)
	if _, err := s.Get(ctx, "e/"+a); err == nil {
		t.Fatal("Get accepted a record moved to another directory")
	}
}

// TestRecordsWithoutNames: records written before records carried their
// names stay readable, writable and listed.
func TestRecordsWithoutNames(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{1}, KeySize)
	s, _ := New(dir, key)
	ctx := context.Background()
	// Seal a record exactly as earlier versions did: no name, the path as
	// additional data.
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	plain := []byte(`{"v":3,"d":{"access_token":"old"}}`)
	nonce := make([]byte, aead.NonceSize())
	sealed := aead.Seal(nonce, nonce, plain, []byte("tokens/demo/alice"))
	if err := os.MkdirAll(filepath.Join(dir, "tokens", "demo"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokens", "demo", "alice.rec"), sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := s.Get(ctx, "tokens/demo/alice")
	if err != nil || e.Version != 3 || e.Data["access_token"] != "old" {
		t.Fatalf("Get = %+v, %v", e, err)
	}
	if names, err := s.List(ctx, "tokens/demo"); err != nil || !slices.Equal(names, []string{"alice"}) {
		t.Fatalf("List = %q, %v", names, err)
	}
	if _, err := s.Put(ctx, "tokens/demo/alice", map[string]string{"access_token": "new"}, 3); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Get(ctx, "tokens/demo/alice"); err != nil || e.Version != 4 || e.Data["access_token"] != "new" {
		t.Fatalf("Get after update = %+v, %v", e, err)
	}
}

// Check-and-set holds across Store values on one directory (a reload opens
// a second) and across processes sharing it (here a Store with a lock of
// its own, as another process has, so that only the file lock serializes
// the two): of two writes at one version, exactly one succeeds.
func TestCheckAndSetAcrossStores(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{1}, KeySize)
	a, err := New(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other := &Store{dir: a.dir, aead: a.aead, lock: &dirLock{f: f}}
	ctx := context.Background()
	for name, pair := range map[string][2]*Store{"reloaded": {a, b}, "another process": {a, other}} {
		for i := range 100 {
			p := fmt.Sprint("tokens/", i)
			if _, err := a.Put(ctx, p, map[string]string{"k": "0"}, 0); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var wins atomic.Int32
			for _, s := range pair {
				wg.Go(func() {
					_, err := s.Put(ctx, p, map[string]string{"k": "1"}, 1)
					switch {
					case err == nil:
						wins.Add(1)
					case !errors.Is(err, kv.ErrConflict):
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if n := wins.Load(); n != 1 {
				t.Fatalf("%s: %d of two writes at version 1 succeeded", name, n)
			}
			a.Delete(ctx, p)
		}
	}
}
