//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package filestore

import (
	"os"
	"syscall"
)

// flock takes an exclusive advisory lock on f, waiting for it.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

// funlock releases flock's lock.
func funlock(f *os.File) { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
