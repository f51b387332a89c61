package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// A caddy-oauthconn process holds a lock on a file in Caddy's data
// directory while it runs, and a second process with the same data
// directory refuses to start. Caddy opens its listeners with SO_REUSEPORT,
// so a second instance on the same ports would start silently and the
// kernel would split requests between the two; and the embedded file store
// serves one process only (its check-and-set is guarded in memory).
//
// The lock is held once per process, in a UsagePool: a reload starts the
// new configuration (taking a reference) before it stops the old one
// (dropping one), so it never lets go in between.
var instanceLocks = caddy.NewUsagePool()

// lockFileName is the lock's file, in Caddy's data directory.
const lockFileName = "oauthconn.lock"

// errLocked is returned when another process holds the lock.
var errLocked = errors.New("locked by another process")

type instanceLock struct{ f *os.File }

// Destruct releases the lock: closing the file drops it.
func (l instanceLock) Destruct() error { return l.f.Close() }

// lockInstance takes the process's lock in dir, or fails naming the process
// that holds it. release gives this configuration's reference back.
func lockInstance(dir string) (release func(), err error) {
	path := filepath.Join(dir, lockFileName)
	_, _, err = instanceLocks.LoadOrNew(path, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := lockFile(f); err != nil {
			holder, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, errLocked) {
				pid := strings.TrimSpace(string(holder))
				if _, perr := strconv.Atoi(pid); perr != nil {
					pid = "unknown"
				}
				return nil, fmt.Errorf("another caddy-oauthconn process (pid %s) runs with the data directory %s: stop it, or give this one a data directory (XDG_DATA_HOME) and ports of its own", pid, dir)
			}
			return nil, err
		}
		f.Truncate(0)
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return instanceLock{f: f}, nil
	})
	if err != nil {
		return nil, err
	}
	return func() { instanceLocks.Delete(path) }, nil
}
