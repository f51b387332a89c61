//go:build unix

package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A second process with the same data directory refuses to start; the same
// process (a reload) takes the lock again without trouble, and gives it
// back when its last configuration stops.
func TestSecondInstanceRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := lockInstance(dir)
	if err != nil {
		t.Fatal(err)
	}
	reload, err := lockInstance(dir) // a reload in the same process
	if err != nil {
		t.Fatalf("a reload could not take the lock: %v", err)
	}
	first()

	// Another process: a lock on another open file description.
	other, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Fatal("another process could lock the data directory while this one runs")
	}
	reload()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the lock was not given back: %v", err)
	}
	if _, err := lockInstance(dir); err == nil || !strings.Contains(err.Error(), "another caddy-oauthconn process") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("starting while another process holds the lock: %v", err)
	}
}
