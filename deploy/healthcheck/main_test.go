package main

import (
	"context"
	"debug/elf"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	closed := httptest.NewServer(mux)
	closed.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		url, err string
	}{
		{srv.URL + "/ok", ""},
		{srv.URL + "/empty", ""},
		{srv.URL + "/down", "503 Service Unavailable"},
		{srv.URL + "/moved", "302 Found"}, // not followed
		{closed.URL + "/ok", "connection refused"},
		{"localhost/oauth/livez", "unsupported protocol scheme"},
	} {
		err := check(ctx, tc.url)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("check(%s) = %v, want healthy", tc.url, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("check(%s) = %v, want an error with %q", tc.url, err, tc.err)
		}
	}
}

// TestCheckIgnoresProxy: a proxy set in the container's environment for the
// app's sake must not carry the health check elsewhere.
func TestCheckIgnoresProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "via the proxy", http.StatusBadGateway)
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	if err := check(context.Background(), srv.URL); err != nil {
		t.Fatal(err)
	}
}

// TestBinary builds the command as the Dockerfile does (static, trimmed
// paths) and runs it: the exit status is the health, the URL comes from the
// argument, else the environment.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "healthcheck")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary is dynamically linked; distroless/static has no libc")
			}
		}
		f.Close()
	}

	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()

	run := func(env string, args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"OAUTHCONN_HEALTHCHECK_URL=" + env}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := run(healthy.URL); code != 0 {
		t.Errorf("healthy URL from the environment: exit %d: %s", code, out)
	}
	if code, out := run(sick.URL); code != 1 || !strings.Contains(out, "503") {
		t.Errorf("sick URL from the environment: exit %d: %s", code, out)
	}
	if code, out := run(sick.URL, healthy.URL); code != 0 {
		t.Errorf("the argument wins over the environment: exit %d: %s", code, out)
	}
}
