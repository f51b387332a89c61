//go:build !unix

package caddymodule

import "os"

// lockFile does not lock where flock(2) is missing: a second instance is
// not detected there.
func lockFile(*os.File) error { return nil }
