package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/caddy-oauthconn/caddy-oauthconn/internal/hydradev"
	"github.com/caddy-oauthconn/caddy-oauthconn/internal/testservices"
)

// replica is one caddy-oauthconn process, run from the built binary with
// debug logging, its output kept for inspection.
type replica struct {
	port int
	cmd  *exec.Cmd
	out  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const replicaCaddyfile = `{
	admin localhost:{$ADMIN_PORT}
	debug
	oauthconn {
		public_url http://localhost:9181
		store vault {
			prefix {env.STORE_PREFIX}
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
		oauthconn_proxy demo {env.DEMO_UPSTREAM}
	}
}
`

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func buildBinary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oauthconn-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "caddy-oauthconn")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/caddy-oauthconn").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func startReplica(t *testing.T, port int, env []string) *replica {
	t.Helper()
	dir := t.TempDir()
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(replicaCaddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &replica{port: port, out: &lockedBuffer{}}
	r.cmd = exec.Command(buildBinary(t), "run", "--config", cf)
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Env = append(r.cmd.Env, fmt.Sprintf("PORT=%d", port), fmt.Sprintf("ADMIN_PORT=%d", port+100),
		"XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(r.url() + "/oauth/connectors")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica on %d did not start:\n%s", port, r.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *replica) url() string { return fmt.Sprintf("http://localhost:%d", r.port) }

func (r *replica) stop() {
	if r.cmd.ProcessState == nil {
		r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
	}
}

// TestReplicas runs two processes sharing one Vault, as replicas behind a
// load balancer: a flow started on one finishes on the other, a storm of
// requests on both after expiry makes one refresh in all (Hydra rotates
// refresh tokens strictly: a second refresh with the same token would
// revoke the grant), a restarted process keeps the connection, and no
// secret reaches any log line even at debug level.
func TestReplicas(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	counter := h.countTokens(t)
	c := h.createClient(t, "http://localhost:9181/oauth/callback", "client_secret_basic")
	venv := testservices.Vault(t)
	prefix := "e2e-replicas-" + hydradev.RandomHex(6)
	env := []string{
		"STORE_PREFIX=" + prefix, "AS_AUTH_URL=" + h.PublicURL + "/oauth2/auth", "AS_TOKEN_URL=" + counter.URL + "/oauth2/token",
		"AS_CLIENT_ID=" + c.ID, "AS_CLIENT_SECRET=" + c.Secret, "DEMO_UPSTREAM=" + up.URL,
	}
	a := startReplica(t, 9181, env)
	b := startReplica(t, 9182, env)
	vc, _ := vaultapi.NewClient(&vaultapi.Config{Address: venv.Addr})
	vc.SetToken(venv.Token)
	stored := func() map[string]any {
		sec, err := vc.Logical().Read("secret/data/" + prefix + "/tokens/demo")
		if err != nil || sec == nil {
			return nil
		}
		d, _ := sec.Data["data"].(map[string]any)
		return d
	}
	// Every secret the test comes across, to look for in the logs.
	secrets := map[string]string{"client secret": c.Secret, "vault token": venv.Token}
	noteTokens := func() {
		if rec := stored(); rec != nil {
			secrets["access token "+fmt.Sprint(len(secrets))] = rec["access_token"].(string)
			secrets["refresh token "+fmt.Sprint(len(secrets))] = rec["refresh_token"].(string)
		}
	}

	user := newBrowser()
	t.Run("a flow started on one replica finishes on the other", func(t *testing.T) {
		resp, body := user.do(t, "GET", b.url()+"/oauth/connectors/demo/authorize", "", "")
		if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != a.url()+"/oauth/?connected=demo" {
			t.Fatalf("flow: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
		}
		cb := user.callbackURL(t)
		if !strings.HasPrefix(cb, a.url()) {
			t.Fatalf("callback at %s, want replica a", cb)
		}
		q := user.visited[len(user.visited)-2].Query() // the callback's query
		secrets["authorization code"], secrets["state"] = q.Get("code"), q.Get("state")
		noteTokens()
		for _, r := range []*replica{a, b} {
			resp, _ := user.do(t, "GET", r.url()+"/demo/items", "", "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("proxy on %d: %d", r.port, resp.StatusCode)
			}
		}
	})

	t.Run("storm on both replicas after expiry refreshes once", func(t *testing.T) {
		exp, _ := time.Parse(time.RFC3339, stored()["expiry"].(string))
		time.Sleep(time.Until(exp.Add(1100 * time.Millisecond)))
		before := counter.Count("refresh_token")
		bad := storm(100, a.url()+"/demo/items", b.url()+"/demo/items")
		if got := counter.Count("refresh_token") - before; got != 1 || bad != 0 {
			t.Fatalf("refreshes = %d, failed requests = %d; want 1 and 0", got, bad)
		}
		noteTokens()
	})

	parent := t // the restarted replica lives as long as the whole test
	logs := []*lockedBuffer{a.out, b.out}
	t.Run("a restarted replica keeps the connection", func(t *testing.T) {
		a.stop()
		defer func() { logs = append(logs, a.out) }()
		a = startReplica(parent, 9181, env)
		resp, body := user.do(t, "GET", a.url()+"/demo/items", "", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("after restart: %d %s", resp.StatusCode, body)
		}
		noteTokens()
	})

	t.Run("no secret in any log line", func(t *testing.T) {
		// A failing path too: a replayed callback.
		if resp, _ := user.do(t, "GET", user.callbackURL(t), "", ""); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("replayed callback: %d", resp.StatusCode)
		}
		var all strings.Builder
		for _, l := range logs {
			all.WriteString(l.String())
		}
		logs := all.String()
		if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, "token refreshed") {
			t.Fatalf("the logs are not the debug logs of these flows:\n%s", logs)
		}
		for name, v := range secrets {
			if v == "" {
				t.Fatalf("no %s was captured", name)
			}
			if strings.Contains(logs, v) {
				t.Errorf("the logs contain the %s", name)
			}
		}
	})
}
