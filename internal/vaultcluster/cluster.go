// Package vaultcluster starts a real three-node HashiCorp Vault cluster with
// integrated (Raft) storage on loopback, for tests of what the proxy does
// when Vault is highly available and loses its leader. It runs the same
// Vault binary as the rest of the tests ($VAULT_BIN, see
// scripts/tools.env.sh): node 1 is initialized (one key share) and
// unsealed, KV version 2 is mounted at secret/, and nodes 2 and 3 join it
// with retry_join and are unsealed, until all three are voters and a leader
// is known.
//
// Ports come from OAUTHCONN_PORT_BASE (default 18200, as in
// scripts/services.sh), above the ones services.sh takes: a cluster in slot
// s takes base+40+6s to base+45+6s. Test packages run in parallel, so each
// package that starts a cluster has a slot of its own:
//
//	0  vault
//	1  e2e
package vaultcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Size is the number of nodes of a cluster.
const Size = 3

// portOffset is where the clusters' ports start above OAUTHCONN_PORT_BASE:
// node i (0-based) of slot s listens on base+40+6s+2i (API) and one above
// (cluster).
const portOffset = 40

// Slots of the packages that start clusters (see the package comment).
const (
	SlotVault = 0
	SlotE2E   = 1
)

// Cluster is a running three-node Vault cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	tb        testing.TB
	bin       string
	unsealKey string
	rootToken string
	http      *http.Client

	mu    sync.Mutex
	nodes [Size]*node
}

type node struct {
	id           string
	api, cluster int
	dir          string // data directory and config
	logPath      string
	cmd          *exec.Cmd
	exited       chan struct{} // closed once the process has been reaped
}

// Start starts a cluster on slot's ports and stops it when tb ends. The
// test is skipped with -short; without $VAULT_BIN it is skipped too, or
// fails when OAUTHCONN_REQUIRE_SERVICES is set (as scripts/test sets it).
func Start(tb testing.TB, slot int) *Cluster {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts three Vault servers")
	}
	bin := os.Getenv("VAULT_BIN")
	if bin == "" {
		if os.Getenv("OAUTHCONN_REQUIRE_SERVICES") != "" {
			tb.Fatal("VAULT_BIN is not set; run the tests with scripts/test")
		}
		tb.Skip("VAULT_BIN is not set; run the tests with scripts/test")
	}
	base := 18200
	if s := os.Getenv("OAUTHCONN_PORT_BASE"); s != "" {
		b, err := strconv.Atoi(s)
		if err != nil {
			tb.Fatalf("OAUTHCONN_PORT_BASE=%q: %v", s, err)
		}
		base = b
	}
	c := &Cluster{tb: tb, bin: bin, http: &http.Client{Timeout: 10 * time.Second}}
	root := tb.TempDir()
	for i := range c.nodes {
		n := &node{
			id:      fmt.Sprintf("node%d", i+1),
			api:     base + portOffset + 6*slot + 2*i,
			cluster: base + portOffset + 6*slot + 2*i + 1,
			dir:     filepath.Join(root, fmt.Sprintf("node%d", i+1)),
		}
		n.logPath = filepath.Join(n.dir, "vault.log")
		if err := os.MkdirAll(filepath.Join(n.dir, "raft"), 0o700); err != nil {
			tb.Fatal(err)
		}
		c.nodes[i] = n
	}
	for i := range c.nodes {
		if err := os.WriteFile(filepath.Join(c.nodes[i].dir, "vault.hcl"), []byte(c.config(i)), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(c.Stop)
	if err := c.bootstrap(); err != nil {
		c.dumpLogs()
		tb.Fatalf("vaultcluster: %v", err)
	}
	return c
}

// config is node i's configuration: Raft storage in its own directory,
// joining the other nodes, and a plain-HTTP listener on loopback.
func (c *Cluster) config(i int) string {
	n := c.nodes[i]
	var joins strings.Builder
	for j, o := range c.nodes {
		if j != i {
			fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n  }\n", o.addr())
		}
	}
	// performance_multiplier 1 is Vault's production timing (elections in
	// about a second or two), rather than the relaxed default.
	return fmt.Sprintf(`disable_mlock = true
ui = false
log_level = "info"
api_addr = %q
cluster_addr = "https://127.0.0.1:%d"

storage "raft" {
  path = %q
  node_id = %q
  performance_multiplier = 1
%s}

listener "tcp" {
  address = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable = true
}
`, n.addr(), n.cluster, filepath.Join(n.dir, "raft"), n.id, joins.String(), n.api, n.cluster)
}

func (n *node) addr() string { return fmt.Sprintf("http://127.0.0.1:%d", n.api) }

func (c *Cluster) bootstrap() error {
	if err := c.start(0); err != nil {
		return err
	}
	var init struct {
		Keys      []string `json:"keys_base64"`
		RootToken string   `json:"root_token"`
	}
	if err := c.call(0, http.MethodPut, "sys/init", "", map[string]any{"secret_shares": 1, "secret_threshold": 1}, &init); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if len(init.Keys) != 1 || init.RootToken == "" {
		return errors.New("init returned no key or no root token")
	}
	c.unsealKey, c.rootToken = init.Keys[0], init.RootToken
	if err := c.unseal(0); err != nil {
		return err
	}
	if err := c.waitFor(30*time.Second, "node1 to become the active node", func() bool { return c.isActive(0) }); err != nil {
		return err
	}
	// New nodes become voters once stable for server_stabilization_time
	// (10 s by default): shorten it so that the cluster forms quickly.
	if err := c.call(0, http.MethodPost, "sys/storage/raft/autopilot/configuration", c.rootToken,
		map[string]any{"server_stabilization_time": "1s", "cleanup_dead_servers": false}, nil); err != nil {
		return fmt.Errorf("autopilot configuration: %w", err)
	}
	if err := c.call(0, http.MethodPost, "sys/mounts/secret", c.rootToken,
		map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}, nil); err != nil {
		return fmt.Errorf("mounting KV v2 at secret/: %w", err)
	}
	// The other nodes join at once, as a cluster's nodes start together.
	errs := make(chan error, Size-1)
	for i := 1; i < Size; i++ {
		go func() {
			if err := c.start(i); err != nil {
				errs <- err
				return
			}
			errs <- c.unseal(i)
		}()
	}
	for i := 1; i < Size; i++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	return c.WaitHealthy(60 * time.Second)
}

// start runs node i's process and waits for its API to answer (sealed or
// not).
func (c *Cluster) start(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	cmd := exec.Command(c.bin, "server", "-config", filepath.Join(n.dir, "vault.hcl"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+n.addr())
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		c.mu.Unlock()
		return fmt.Errorf("starting %s: %w", n.id, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		log.Close()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	c.mu.Unlock()
	return c.waitFor(30*time.Second, n.id+"'s API", func() bool {
		select {
		case <-exited:
			return true // reported below
		default:
		}
		var st struct{}
		return c.call(i, http.MethodGet, "sys/seal-status", "", nil, &st) == nil
	}, func() error {
		select {
		case <-exited:
			return fmt.Errorf("%s exited", n.id)
		default:
			return nil
		}
	})
}

func (c *Cluster) unseal(i int) error {
	// A joining node stays sealed until retry_join has joined it, which
	// needs the key given here; while it joins, an unseal request may
	// fail. Give the key until the node reports itself unsealed.
	var last error
	err := c.waitFor(60*time.Second, c.nodes[i].id+" to unseal", func() bool {
		var st struct {
			Sealed   bool `json:"sealed"`
			Progress int  `json:"progress"`
		}
		if err := c.call(i, http.MethodGet, "sys/seal-status", "", nil, &st); err != nil {
			last = err
			return false
		}
		if !st.Sealed {
			return true
		}
		if st.Progress == 0 {
			last = c.call(i, http.MethodPut, "sys/unseal", "", map[string]any{"key": c.unsealKey}, nil)
		}
		return false
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last error: %v)", err, last)
	}
	return err
}

func (c *Cluster) isActive(i int) bool {
	var l struct {
		IsSelf bool `json:"is_self"`
	}
	return c.call(i, http.MethodGet, "sys/leader", "", nil, &l) == nil && l.IsSelf
}

// Addr returns node i's API address (0-based), such as
// http://127.0.0.1:18240.
func (c *Cluster) Addr(i int) string { return c.nodes[i].addr() }

// Addrs returns every node's API address, in node order.
func (c *Cluster) Addrs() []string {
	out := make([]string, Size)
	for i := range out {
		out[i] = c.Addr(i)
	}
	return out
}

// RootToken returns the cluster's root token.
func (c *Cluster) RootToken() string { return c.rootToken }

// Leader returns the index of the active node (the Raft leader), or -1 if
// no running node says it is.
func (c *Cluster) Leader() int {
	for i := range c.nodes {
		if c.running(i) && c.isActive(i) {
			return i
		}
	}
	return -1
}

// WaitLeader waits up to d for a leader and returns its index.
func (c *Cluster) WaitLeader(d time.Duration) (int, error) {
	l := -1
	err := c.waitFor(d, "a leader", func() bool { l = c.Leader(); return l >= 0 })
	return l, err
}

func (c *Cluster) running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Kill ends node i with SIGKILL, as a crash would, and waits for it to be
// gone.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	cmd, exited := n.cmd, n.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Restart starts node i again on its data directory, unseals it and waits
// until the cluster is healthy again: a leader, and three healthy voters.
func (c *Cluster) Restart(i int) error {
	if c.running(i) {
		return fmt.Errorf("%s is running", c.nodes[i].id)
	}
	if err := c.start(i); err != nil {
		return err
	}
	if err := c.unseal(i); err != nil {
		return err
	}
	return c.WaitHealthy(60 * time.Second)
}

// Server is one member of the Raft configuration.
type Server struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
	Leader  bool   `json:"leader"`
	Voter   bool   `json:"voter"`
}

// Configuration returns the Raft configuration as the leader reports it
// (sys/storage/raft/configuration).
func (c *Cluster) Configuration() ([]Server, error) {
	l := c.Leader()
	if l < 0 {
		return nil, errors.New("no leader")
	}
	var out struct {
		Data struct {
			Config struct {
				Servers []Server `json:"servers"`
			} `json:"config"`
		} `json:"data"`
	}
	if err := c.call(l, http.MethodGet, "sys/storage/raft/configuration", c.rootToken, nil, &out); err != nil {
		return nil, err
	}
	return out.Data.Config.Servers, nil
}

// Autopilot is what autopilot says of the cluster
// (sys/storage/raft/autopilot/state).
type Autopilot struct {
	Healthy          bool     `json:"healthy"`
	FailureTolerance int      `json:"failure_tolerance"`
	Leader           string   `json:"leader"`
	Voters           []string `json:"voters"`
	Servers          map[string]struct {
		Healthy bool   `json:"healthy"`
		Status  string `json:"status"`
	} `json:"servers"`
}

// AutopilotState asks the leader for autopilot's view of the cluster.
func (c *Cluster) AutopilotState() (Autopilot, error) {
	l := c.Leader()
	if l < 0 {
		return Autopilot{}, errors.New("no leader")
	}
	var out struct {
		Data Autopilot `json:"data"`
	}
	err := c.call(l, http.MethodGet, "sys/storage/raft/autopilot/state", c.rootToken, nil, &out)
	return out.Data, err
}

// Healthy reports whether autopilot counts every node as a healthy voter.
func (c *Cluster) Healthy() bool {
	st, err := c.AutopilotState()
	if err != nil || !st.Healthy || len(st.Voters) != Size {
		return false
	}
	for _, s := range st.Servers {
		if !s.Healthy || s.Status == "non-voter" {
			return false
		}
	}
	return len(st.Servers) == Size
}

// WaitHealthy waits up to d for a leader and three healthy voters.
func (c *Cluster) WaitHealthy(d time.Duration) error {
	return c.waitFor(d, "three healthy voters", c.Healthy)
}

// Stop ends every node. Start registers it with the test's cleanup.
func (c *Cluster) Stop() {
	for i := range c.nodes {
		c.Kill(i)
	}
	if c.tb.Failed() {
		c.dumpLogs()
	}
}

func (c *Cluster) dumpLogs() {
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.logPath)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		c.tb.Logf("vault %s (last lines):\n%s", n.id, strings.Join(lines, "\n"))
	}
}

// call sends one request to node i's API and decodes a JSON answer into
// out (if not nil).
func (c *Cluster) call(i int, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.nodes[i].addr()+"/v1/"+path, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// waitFor polls cond every 100 ms for at most d; each abort function may
// end the wait early with an error.
func (c *Cluster) waitFor(d time.Duration, what string, cond func() bool, abort ...func() error) error {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		for _, a := range abort {
			if err := a(); err != nil {
				return err
			}
		}
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
	}
}
