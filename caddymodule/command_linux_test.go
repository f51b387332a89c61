package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// TestImportReadsWithoutEcho: oauthconn import, typed at a terminal,
// reads the refresh token with echo off, so it is not shown on screen (or
// kept in a terminal's scrollback or a session recording).
func TestImportReadsWithoutEcho(t *testing.T) {
	master, tty := openPTY(t)
	const token = "rt-CANARY-5e7a1c"

	var got map[string]string
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer admin.Close()

	// Everything the terminal shows.
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		b := make([]byte, 256)
		for {
			n, err := master.Read(b)
			mu.Lock()
			screen.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	stdin, stderr := os.Stdin, os.Stderr
	os.Stdin, os.Stderr = tty, tty
	defer func() { os.Stdin, os.Stderr = stdin, stderr }()

	done := make(chan error, 1)
	go func() {
		fs := pflag.NewFlagSet("oauthconn", pflag.ContinueOnError)
		fs.String("address", "", "")
		fs.String("subject", "", "")
		if err := fs.Parse([]string{"import", "demo", "--address", strings.TrimPrefix(admin.URL, "http://")}); err != nil {
			done <- err
			return
		}
		_, err := cmdOAuthConn(caddycmd.Flags{FlagSet: fs})
		done <- err
	}()
	// Type the token once the command reads the terminal without echo
	// (or, if it never turns echo off, after a while): the terminal
	// echoes keystrokes as they arrive.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
	}
	if _, err := master.Write([]byte(token + "\n\x04")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("import did not finish")
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	shown := screen.String()
	mu.Unlock()
	if got["refresh_token"] != token {
		t.Fatalf("the admin API got %v", got)
	}
	if strings.Contains(shown, token) {
		t.Fatalf("the terminal showed the refresh token: %q", shown)
	}
	if !strings.Contains(shown, "Refresh token") {
		t.Fatalf("no prompt on the terminal: %q", shown)
	}
}

// openPTY opens a pseudo-terminal: the master side (the "keyboard and
// screen") and the terminal a program reads.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("naming the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return master, tty
}
