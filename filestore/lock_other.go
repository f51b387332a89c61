//go:build !unix

package filestore

import "os"

// flock is a no-op where there is no advisory file lock: the store then
// serializes its writes within one process only.
func flock(*os.File) error { return nil }

func funlock(*os.File) {}
