// Package kv defines the contract shared by the places caddy-oauthconn keeps
// its records: a versioned key/value store of small string maps, written with
// check-and-set. HashiCorp Vault KV v2 (package vault) and the embedded
// encrypted file store (package filestore) implement it; the packages that
// consume it (tokens, flow) declare the narrow interfaces they need.
package kv

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned when no record exists at a path.
var ErrNotFound = errors.New("record not found")

// ErrConflict is returned by a check-and-set write whose expected version
// does not match the stored one: somebody else wrote first.
var ErrConflict = errors.New("record changed concurrently (check-and-set mismatch)")

// Entry is one stored record and the version it was read at.
type Entry struct {
	// Data is the record's fields.
	Data map[string]string
	// Version is the record's current version; it is passed back to Put as
	// the expected version of a check-and-set write. A missing record has
	// version 0.
	Version int
}

// Store is the full contract of a record store. Paths are slash-separated,
// relative to the store's own prefix, and made of segments produced by
// Segment.
type Store interface {
	// Get reads the record at path, or returns ErrNotFound.
	Get(ctx context.Context, path string) (Entry, error)
	// Put writes data at path if the stored version equals cas (0: only if
	// no record exists) and returns the new version, or ErrConflict.
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
	// Delete removes the record at path with all its versions. Deleting a
	// missing record is not an error.
	Delete(ctx context.Context, path string) error
	// List returns the names of the records directly below dir (without
	// the dir prefix). A missing dir lists nothing.
	List(ctx context.Context, dir string) ([]string, error)
}

// Segment checks that s can be used as one segment of a record path: not
// empty, not "." or "..", and free of slashes, backslashes and control
// characters.
func Segment(s string) error {
	switch s {
	case "":
		return errors.New("empty path segment")
	case ".", "..":
		return fmt.Errorf("path segment %q is not allowed", s)
	}
	if strings.ContainsAny(s, `/\`) {
		return fmt.Errorf("path segment %q contains a slash", s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("path segment contains a control character")
		}
	}
	return nil
}
