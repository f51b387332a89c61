//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package filestore

import "os"

// flock is a no-op where the store uses no advisory file lock: it then
// serializes its writes within one process only.
func flock(*os.File) error { return nil }

func funlock(*os.File) {}
