package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// benchCaddyfile serves, in one process, the connector through
// oauthconn_proxy on {$PORT} and the same upstream through plain
// reverse_proxy with a static Authorization header on {$STATIC_PORT}, with
// the same path handling, so the two differ only by what oauthconn adds.
const benchCaddyfile = `{
	admin {$ADMIN}
	log {
		level ERROR
	}
	oauthconn {
		public_url http://localhost:{$PUBLIC_PORT}
		store vault {
			address {env.BENCH_VAULT}
			prefix {env.BENCH_PREFIX}
		}
		connector demo {
			authorization_url {env.AS_AUTH_URL}
			token_url {env.AS_TOKEN_URL}
			client_id {env.AS_CLIENT_ID}
			client_secret {env.AS_CLIENT_SECRET}
			auth_style basic
			scopes openid offline_access
		}
	}
}

http://localhost:{$PORT} {
	oauthconn_connect /oauth/*
	handle_path /demo/* {
		oauthconn_proxy demo http://{$UPSTREAM}
	}
	# No copy of request bodies for a replay after a 401: what the copy
	# costs a POST.
	handle_path /noreplay/* {
		oauthconn_proxy demo http://{$UPSTREAM} {
			replay_limit off
		}
	}
}

http://localhost:{$STATIC_PORT} {
	handle_path /demo/* {
		reverse_proxy {$UPSTREAM} {
			header_up Host {$UPSTREAM}
			header_up Authorization "{$STATIC_AUTHORIZATION}"
		}
	}
}

# The same pair with an https upstream (a self-signed certificate the
# transport trusts): /h1/ forces HTTP/1.1, /h2/ leaves Caddy's default
# versions (1.1 and 2), which negotiates HTTP/2 by ALPN.
http://localhost:{$TLS_PORT} {
	handle_path /h1/* {
		oauthconn_proxy demo https://{$TLS_UPSTREAM} {
			transport http {
				tls_trust_pool file {$TLS_CA}
				versions 1.1
			}
		}
	}
	handle_path /h2/* {
		oauthconn_proxy demo https://{$TLS_UPSTREAM} {
			transport http {
				tls_trust_pool file {$TLS_CA}
			}
		}
	}
}

http://localhost:{$TLS_STATIC_PORT} {
	handle_path /h1/* {
		reverse_proxy https://{$TLS_UPSTREAM} {
			header_up Host {$TLS_UPSTREAM}
			header_up Authorization "{$STATIC_AUTHORIZATION}"
			transport http {
				tls_trust_pool file {$TLS_CA}
				versions 1.1
			}
		}
	}
	handle_path /h2/* {
		reverse_proxy https://{$TLS_UPSTREAM} {
			header_up Host {$TLS_UPSTREAM}
			header_up Authorization "{$STATIC_AUTHORIZATION}"
			transport http {
				tls_trust_pool file {$TLS_CA}
			}
		}
	}
}
`

// staticAuthorization is what the plain reverse_proxy sends upstream: as
// long as the Authorization oauthconn_proxy sends with Hydra's tokens, and
// what tells the upstream which of the two a request came from.
const staticAuthorization = "Bearer ory_at_static-token-of-the-same-length-as-hydra-tokens.0123456789abcdefghijklmnopqrstu"

// proc is one caddy-oauthconn process.
type proc struct {
	port    int
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer
	started time.Time
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) url(path string) string { return fmt.Sprintf("http://localhost:%d%s", p.port, path) }

// pid is the process's id (taskset, when pinning, execs the binary in its
// own place).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// startProc starts the binary on port (and port+1 for the static proxy,
// port+2 and port+3 for the pair with the https upstream).
func startProc(w *world, port int) (*proc, error) {
	return launch(w, "proc-", benchCaddyfile, port, "/oauth/connectors", func(status int) bool { return status == http.StatusOK },
		"ADMIN="+w.admin(port), fmt.Sprintf("STATIC_PORT=%d", port+1), "STATIC_AUTHORIZATION="+staticAuthorization,
		fmt.Sprintf("TLS_PORT=%d", port+2), fmt.Sprintf("TLS_STATIC_PORT=%d", port+3), "TLS_UPSTREAM="+w.tlsUpstream, "TLS_CA="+w.tlsCA,
		"BENCH_VAULT="+w.vaultURL, "AS_TOKEN_URL="+w.tokenURL+"/oauth2/token")
}

// launch starts the binary with caddyfile on port, with the environment
// every benchmark Caddyfile reads and env, and waits until a GET of ready
// answers a status ready accepts.
func launch(w *world, name, caddyfile string, port int, ready string, ok func(status int) bool, env ...string) (*proc, error) {
	dir, err := os.MkdirTemp(w.tmp, name)
	if err != nil {
		return nil, err
	}
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	p := &proc{port: port}
	p.cmd = exec.Command(w.bin, "run", "--config", cf)
	pinned := w.pin != nil && port == w.publicPort
	if pinned {
		p.cmd = w.pin.command(w.bin, "run", "--config", cf)
	}
	p.cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port), fmt.Sprintf("PUBLIC_PORT=%d", w.publicPort),
		"UPSTREAM="+w.upstream, "BENCH_PREFIX="+w.prefix, "AS_AUTH_URL="+w.hydra.PublicURL+"/oauth2/auth",
		"AS_CLIENT_ID="+w.client.ID, "AS_CLIENT_SECRET="+w.client.Secret,
		"XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "GOMAXPROCS=2")
	p.cmd.Env = append(p.cmd.Env, env...)
	if pinned {
		p.cmd.Env = append(p.cmd.Env, "GOMAXPROCS=1") // the last value counts
	}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(p.url(ready))
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("process on %d did not start: %s", port, p.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *proc) stop() {
	if p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// connect runs the authorization code grant through p as a browser would.
func connect(p *proc) error {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get(p.url("/oauth/connectors/demo/authorize"))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Request.URL.RawQuery, "connected=demo") {
		return fmt.Errorf("connect: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return nil
}
