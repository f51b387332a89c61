// Package filestore is the embedded, zero-setup record store: each record is
// a file below a directory, sealed with AES-256-GCM under a key kept beside
// it. It serves one process; replicas that must share connections use Vault.
package filestore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// KeySize is the length in bytes of a store key (AES-256).
const KeySize = 32

const ext = ".rec"

// Store is a kv.Store on the local file system. It is safe for concurrent use
// within one process.
type Store struct {
	dir  string
	aead cipher.AEAD

	mu sync.Mutex // serializes check-and-set writes and deletes
}

// New opens (creating if needed) a store in dir, sealed with key.
func New(dir string, key []byte) (*Store, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("filestore: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filestore: creating %s: %w", dir, err)
	}
	return &Store{dir: dir, aead: aead}, nil
}

// Location names the store: its directory.
func (s *Store) Location() string { return "file:" + s.dir }

// LoadOrCreateKey reads a base64 key from path, or generates one and writes
// it there with mode 0600 when the file does not exist yet.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return DecodeKey(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("filestore: reading key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("filestore: creating key directory: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("filestore: generating key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		return LoadOrCreateKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: creating key file: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return nil, fmt.Errorf("filestore: writing key file: %w", err)
	}
	return key, nil
}

// DecodeKey decodes a base64 (standard or URL alphabet) store key.
func DecodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(s); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("filestore: key must decode to %d bytes, got %d", KeySize, len(key))
			}
			return key, nil
		}
	}
	return nil, errors.New("filestore: key is not valid base64")
}

type record struct {
	Version int               `json:"v"`
	Data    map[string]string `json:"d"`
}

func (s *Store) file(p string) (string, error) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, seg := range segs {
		if err := kv.Segment(seg); err != nil {
			return "", fmt.Errorf("filestore: path %q: %w", p, err)
		}
		segs[i] = url.PathEscape(seg)
	}
	return filepath.Join(s.dir, filepath.Join(segs...)) + ext, nil
}

func (s *Store) read(p string) (record, error) {
	name, err := s.file(p)
	if err != nil {
		return record{}, err
	}
	sealed, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, kv.ErrNotFound
	}
	if err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: %w", p, err)
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return record{}, fmt.Errorf("filestore: reading %s: file is truncated", p)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(p))
	if err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: cannot decrypt (wrong key or tampered file)", p)
	}
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: decoding: %w", p, err)
	}
	return rec, nil
}

// Get implements kv.Store.
func (s *Store) Get(_ context.Context, p string) (kv.Entry, error) {
	rec, err := s.read(p)
	if err != nil {
		return kv.Entry{}, err
	}
	return kv.Entry{Data: rec.Data, Version: rec.Version}, nil
}

// Put implements kv.Store.
func (s *Store) Put(_ context.Context, p string, data map[string]string, cas int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.read(p)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return 0, err
	}
	if cur.Version != cas {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, kv.ErrConflict)
	}
	next := record{Version: cur.Version + 1, Data: data}
	plain, err := json.Marshal(next)
	if err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	sealed := s.aead.Seal(nonce, nonce, plain, []byte(p))
	name, _ := s.file(p) // validated by read
	if err := writeAtomic(name, sealed); err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	return next.Version, nil
}

// Delete implements kv.Store.
func (s *Store) Delete(_ context.Context, p string) error {
	name, err := s.file(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filestore: deleting %s: %w", p, err)
	}
	return nil
}

// List implements kv.Store.
func (s *Store) List(_ context.Context, dir string) ([]string, error) {
	d := s.dir
	if dir = strings.Trim(dir, "/"); dir != "" {
		name, err := s.file(dir)
		if err != nil {
			return nil, err
		}
		d = strings.TrimSuffix(name, ext)
	}
	ents, err := os.ReadDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: listing %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ext)
		if !ok || e.IsDir() {
			continue
		}
		if un, err := url.PathUnescape(n); err == nil {
			names = append(names, un)
		}
	}
	return names, nil
}

func writeAtomic(name string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// Interface guard.
var _ kv.Store = (*Store)(nil)
