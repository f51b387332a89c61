// Package filestore is the embedded, zero-setup record store: each record is
// a file below a directory, sealed with AES-256-GCM under a key kept beside
// it. It serves one process; replicas that must share connections use Vault.
// Its writes are serialized all the same with other processes on the same
// directory, where the platform has advisory file locks, so that two
// processes pointed at one directory do not break check-and-set.
package filestore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// KeySize is the length in bytes of a store key (AES-256).
const KeySize = 32

const ext = ".rec"

// Store is a kv.Store on the local file system. It is safe for concurrent
// use, also by other Store values on the same directory (a reload opens
// one) and by other processes sharing it.
type Store struct {
	dir  string
	aead cipher.AEAD

	lock *dirLock // serializes check-and-set writes and deletes
}

// dirLock serializes the writes to one directory: mu within this process,
// an advisory lock on f (a file in the directory, where the platform has
// one) across processes. One serves all Store values on a directory.
type dirLock struct {
	mu sync.Mutex
	f  *os.File
}

// dirLocks holds a dirLock per directory (its absolute, cleaned path).
var dirLocks sync.Map

// lockOf returns dir's dirLock, opening its lock file on first use.
func lockOf(dir string) (*dirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if l, ok := dirLocks.Load(abs); ok {
		return l.(*dirLock), nil
	}
	f, err := os.OpenFile(filepath.Join(abs, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	l, loaded := dirLocks.LoadOrStore(abs, &dirLock{f: f})
	if loaded {
		f.Close()
	}
	return l.(*dirLock), nil
}

// lockName is the lock file's name: never a record's (those end in ext).
const lockName = ".lock"

// hold takes l: first within the process, then across processes.
func (l *dirLock) hold() (release func(), err error) {
	l.mu.Lock()
	if err := flock(l.f); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	return func() {
		funlock(l.f)
		l.mu.Unlock()
	}, nil
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
	if err := mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("filestore: creating %s: %w", dir, err)
	}
	lock, err := lockOf(dir)
	if err != nil {
		return nil, fmt.Errorf("filestore: lock file in %s: %w", dir, err)
	}
	return &Store{dir: dir, aead: aead, lock: lock}, nil
}

// Location names the store: its directory.
func (s *Store) Location() string { return "file:" + s.dir }

// LoadOrCreateKey reads a base64 key from path, or generates one and writes
// it there with mode 0600 when the file does not exist yet.
//
// A new key is written to a temporary file, flushed to disk, and only then
// linked into place, and the directory is flushed before the key is
// returned: records sealed under a key that a crash could lose or leave
// truncated would be unreadable forever, and a concurrent caller never sees
// a partly written key file.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return DecodeKey(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("filestore: reading key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("filestore: creating key directory: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("filestore: generating key: %w", err)
	}
	tmp, err := writeTemp(dir, []byte(base64.StdEncoding.EncodeToString(key)+"\n"))
	if err != nil {
		return nil, fmt.Errorf("filestore: writing key file: %w", err)
	}
	defer os.Remove(tmp)
	// A hard link, unlike a rename, fails when the target exists, so two
	// processes starting at once cannot replace each other's key.
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		return LoadOrCreateKey(path)
	} else if err != nil {
		return nil, fmt.Errorf("filestore: creating key file: %w", err)
	}
	if err := syncDir(dir); err != nil {
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
	// Name is the last segment of the record's path. A record stored under
	// a hashed file name is listed by this name, since the file name
	// cannot be turned back into it. Records written before names were
	// stored lack it; their file names are never hashed.
	Name string `json:"n,omitempty"`
}

// maxName is the longest escaped path segment used as a file or directory
// name as it is. Linux file systems allow names of up to 255 bytes
// (NAME_MAX); a record's file adds the 4 bytes of ".rec", and 200 leaves a
// margin for that suffix and for file systems that encode names into
// something longer. Longer segments get hashed names (see fileName).
const maxName = 200

// hashPrefix starts every hashed file name. url.PathEscape always escapes
// '#', so no plainly named file starts with it and the two kinds of names
// never collide.
const hashPrefix = "#"

// fileName returns the file or directory name of one path segment: the
// segment escaped with url.PathEscape, or, when that is longer than maxName
// (a subject of 512 bytes, or one whose non-ASCII characters triple in
// length when escaped), hashPrefix and the hex SHA-256 of the segment.
func fileName(seg string) (name string, hashed bool) {
	if e := url.PathEscape(seg); len(e) <= maxName {
		return e, false
	}
	sum := sha256.Sum256([]byte(seg))
	return hashPrefix + hex.EncodeToString(sum[:]), true
}

// hashedAAD is the additional data that seals a record stored under a
// hashed file name: its directory's logical path and its file name. It
// cannot be the record's logical path, as for other records, because List
// must decrypt the record to learn that path; the record is still bound to
// its logical path, because the file name is the digest of the name and
// read checks the name sealed in the record. The NUL, which kv.Segment
// refuses in a path, keeps it distinct from any logical path.
func hashedAAD(dir, file string) string {
	return dir + "\x00" + file
}

// location is where a record lives: its file, the additional data its seal
// is bound to, and the last segment of its logical path.
type location struct {
	file   string
	aad    string
	name   string
	hashed bool
}

func (s *Store) locate(p string) (location, error) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	files := make([]string, len(segs))
	for i, seg := range segs {
		if err := kv.Segment(seg); err != nil {
			return location{}, fmt.Errorf("filestore: path %q: %w", p, err)
		}
		files[i], _ = fileName(seg)
	}
	last := len(segs) - 1
	_, hashed := fileName(segs[last])
	loc := location{
		file: filepath.Join(s.dir, filepath.Join(files...)) + ext,
		// Plainly named records have always been sealed with the path
		// exactly as given; keep it so that existing records stay readable.
		aad:    p,
		name:   segs[last],
		hashed: hashed,
	}
	if hashed {
		loc.aad = hashedAAD(strings.Join(segs[:last], "/"), files[last])
	}
	return loc, nil
}

// open reads and decrypts the record file at file, sealed with aad; what
// names the record in errors.
func (s *Store) open(file, aad, what string) (record, error) {
	sealed, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, kv.ErrNotFound
	}
	if err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: %w", what, err)
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return record{}, fmt.Errorf("filestore: reading %s: file is truncated", what)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(aad))
	if err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: cannot decrypt (wrong key or tampered file)", what)
	}
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil {
		return record{}, fmt.Errorf("filestore: reading %s: decoding: %w", what, err)
	}
	return rec, nil
}

func (s *Store) read(loc location, p string) (record, error) {
	rec, err := s.open(loc.file, loc.aad, p)
	if err != nil {
		return record{}, err
	}
	// A hashed record must name itself; any record that names itself must
	// name this path.
	if (loc.hashed || rec.Name != "") && rec.Name != loc.name {
		return record{}, fmt.Errorf("filestore: reading %s: the file holds another record (tampered file)", p)
	}
	return rec, nil
}

// Get implements kv.Store.
func (s *Store) Get(_ context.Context, p string) (kv.Entry, error) {
	loc, err := s.locate(p)
	if err != nil {
		return kv.Entry{}, err
	}
	rec, err := s.read(loc, p)
	if err != nil {
		return kv.Entry{}, err
	}
	return kv.Entry{Data: rec.Data, Version: rec.Version}, nil
}

// Put implements kv.Store.
func (s *Store) Put(_ context.Context, p string, data map[string]string, cas int) (int, error) {
	loc, err := s.locate(p)
	if err != nil {
		return 0, err
	}
	release, err := s.lock.hold()
	if err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	defer release()
	cur, err := s.read(loc, p)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return 0, err
	}
	if cur.Version != cas {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, kv.ErrConflict)
	}
	next := record{Version: cur.Version + 1, Data: data, Name: loc.name}
	plain, err := json.Marshal(next)
	if err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	sealed := s.aead.Seal(nonce, nonce, plain, []byte(loc.aad))
	if err := writeAtomic(loc.file, sealed); err != nil {
		return 0, fmt.Errorf("filestore: writing %s: %w", p, err)
	}
	return next.Version, nil
}

// Delete implements kv.Store.
func (s *Store) Delete(_ context.Context, p string) error {
	loc, err := s.locate(p)
	if err != nil {
		return err
	}
	name := loc.file
	release, err := s.lock.hold()
	if err != nil {
		return fmt.Errorf("filestore: deleting %s: %w", p, err)
	}
	defer release()
	err = os.Remove(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("filestore: deleting %s: %w", p, err)
	}
	// Flush the removal: a record that comes back after a crash would
	// resurrect a connection (and its refresh token) the user disconnected.
	if err := syncDir(filepath.Dir(name)); err != nil {
		return fmt.Errorf("filestore: deleting %s: %w", p, err)
	}
	return nil
}

// List implements kv.Store. Plainly named records are listed by their
// unescaped file names; records under hashed names are decrypted to read the
// names sealed in them.
func (s *Store) List(_ context.Context, dir string) ([]string, error) {
	d := s.dir
	if dir = strings.Trim(dir, "/"); dir != "" {
		loc, err := s.locate(dir)
		if err != nil {
			return nil, err
		}
		d = strings.TrimSuffix(loc.file, ext)
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
		if !strings.HasPrefix(n, hashPrefix) {
			if un, err := url.PathUnescape(n); err == nil {
				names = append(names, un)
			}
			continue
		}
		what := path.Join(dir, n)
		rec, err := s.open(filepath.Join(d, e.Name()), hashedAAD(dir, n), what)
		if errors.Is(err, kv.ErrNotFound) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return nil, err
		}
		if f, hashed := fileName(rec.Name); !hashed || f != n || kv.Segment(rec.Name) != nil {
			return nil, fmt.Errorf("filestore: listing %s: %s holds another record (tampered file)", dir, what)
		}
		names = append(names, rec.Name)
	}
	return names, nil
}

// writeAtomic replaces the file name with b so that, even across a crash,
// the file holds either its old or its new content: b goes to a temporary
// file that is flushed before it is renamed over name, and the directory is
// flushed after the rename so that the rename itself is on disk.
func writeAtomic(name string, b []byte) error {
	dir := filepath.Dir(name)
	if err := mkdirAll(dir); err != nil {
		return err
	}
	tmp, err := writeTemp(dir, b)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // no-op once renamed
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeTemp writes b to a new temporary file (mode 0600) in dir, flushes
// it to disk, and returns its name.
func writeTemp(dir string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// syncDir flushes a directory, which makes the creation, renaming and
// removal of the files in it durable: fsync on a file covers its content,
// not its directory entry.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// mkdirAll is os.MkdirAll (mode 0700) that also flushes the parent of every
// directory it creates, so that a file later made durable in a new
// directory is not lost with the directory's own entry after a crash.
func mkdirAll(dir string) error {
	// Find the directories that do not exist yet, deepest first. Another
	// process may create some of them meanwhile; flushing an extra parent
	// then costs nothing but time.
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// Interface guard.
var _ kv.Store = (*Store)(nil)
