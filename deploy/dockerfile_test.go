package deploy_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// The image cannot be built here (no base image can be fetched), so these
// tests read the Dockerfile: a small parser for the subset it uses, then
// checks of what the image must be.

type instruction struct {
	cmd   string   // upper case
	flags []string // leading --name=value options
	args  string   // the rest
	line  int
}

// exec is the instruction's exec (JSON) form, or nil for the shell form.
func (in instruction) exec(t *testing.T) []string {
	t.Helper()
	if !strings.HasPrefix(in.args, "[") {
		return nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
		t.Fatalf("Dockerfile:%d: %s: %v", in.line, in.cmd, err)
	}
	return argv
}

func (in instruction) flag(name string) (string, bool) {
	for _, f := range in.flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

type stage struct {
	base, name string
	body       []instruction
}

func (s stage) all(cmd string) []instruction {
	var found []instruction
	for _, in := range s.body {
		if in.cmd == cmd {
			found = append(found, in)
		}
	}
	return found
}

// one is the stage's only instruction cmd (the last one counts for Docker,
// so more than one is a mistake here).
func (s stage) one(t *testing.T, cmd string) instruction {
	t.Helper()
	found := s.all(cmd)
	if len(found) != 1 {
		t.Fatalf("stage %q: want exactly one %s, have %d", s.name, cmd, len(found))
	}
	return found[0]
}

type dockerfile struct {
	args   map[string]string // global ARGs' defaults
	stages []stage
}

var varRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// parseDockerfile reads the Dockerfile syntax this project uses: comments,
// line continuations, global ARGs, FROM … AS, instructions with leading
// --flags, and exec forms. Heredocs and a changed escape character are
// refused, so that nothing is silently misread.
func parseDockerfile(t *testing.T, text string) dockerfile {
	t.Helper()
	df := dockerfile{args: map[string]string{}}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimSpace(lines[i])
		if strings.HasPrefix(line, "# escape=") {
			t.Fatalf("Dockerfile:%d: the escape directive is not understood by this test", start)
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			line = strings.TrimSuffix(line, `\`)
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				next = `\` // a comment inside a continuation is dropped
			}
			line += " " + next
		}
		line = strings.TrimSuffix(line, `\`)
		if strings.Contains(line, "<<") {
			t.Fatalf("Dockerfile:%d: heredocs are not understood by this test", start)
		}
		cmd, rest, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), line: start}
		rest = strings.Join(strings.Fields(rest), " ")
		for strings.HasPrefix(rest, "--") {
			f, r, _ := strings.Cut(rest, " ")
			in.flags = append(in.flags, f)
			rest = r
		}
		in.args = rest
		switch {
		case in.cmd == "FROM":
			words := strings.Fields(rest)
			s := stage{base: varRef.ReplaceAllStringFunc(words[0], func(ref string) string {
				return df.args[varRef.FindStringSubmatch(ref)[1]]
			})}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				s.name = words[2]
			}
			df.stages = append(df.stages, s)
		case len(df.stages) == 0:
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", start, in.cmd)
			}
			for _, a := range strings.Fields(rest) {
				name, value, _ := strings.Cut(a, "=")
				df.args[name] = value
			}
		default:
			s := &df.stages[len(df.stages)-1]
			s.body = append(s.body, in)
		}
	}
	return df
}

// env is a stage's ENV (the key=value form).
func (s stage) env(t *testing.T) map[string]string {
	env := map[string]string{}
	for _, in := range s.all("ENV") {
		for _, kv := range strings.Fields(in.args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("Dockerfile:%d: ENV %s: use the key=value form", in.line, kv)
			}
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env
}

// copied maps each file the final stage copies to where it came from:
// "build:<path>" for another stage's file, "context:<path>" for the build
// context's. A directory copy (source ending in /) maps each of srcFiles
// below it.
func copied(t *testing.T, final stage, buildOutputs []string) map[string]string {
	t.Helper()
	dest := map[string]string{}
	for _, in := range final.all("COPY") {
		words := strings.Fields(in.args)
		if len(words) != 2 {
			t.Fatalf("Dockerfile:%d: COPY with one source and one destination, please", in.line)
		}
		src, dst := words[0], words[1]
		from, ok := in.flag("from")
		if !ok {
			dest[dst] = "context:" + src
			continue
		}
		if !strings.HasSuffix(src, "/") {
			dest[dst] = from + ":" + src
			continue
		}
		for _, o := range buildOutputs {
			if rel, ok := strings.CutPrefix(o, src); ok {
				dest[path.Join(dst, rel)] = from + ":" + o
			}
		}
	}
	return dest
}

// goBuilds returns the -o output and package of each `go build` in the
// stage's RUN instructions, with the flags and environment on its line.
type goBuild struct {
	output, pkg, command string
}

func goBuilds(s stage) []goBuild {
	var builds []goBuild
	for _, in := range s.all("RUN") {
		for _, cmd := range strings.Split(in.args, "&&") {
			if !strings.Contains(cmd, "go build") {
				continue
			}
			b := goBuild{command: cmd}
			words := strings.Fields(cmd)
			for i, w := range words {
				if w == "-o" && i+1 < len(words) {
					b.output = words[i+1]
				}
			}
			b.pkg = words[len(words)-1]
			builds = append(builds, b)
		}
	}
	return builds
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t, string(readFile(t, "Dockerfile")))
	if len(df.stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stage(s)", len(df.stages))
	}
	build, final := df.stages[0], df.stages[len(df.stages)-1]

	// The build stage: Go at least as new as go.mod asks, no cgo, trimmed
	// paths, the version stamped where `caddy-oauthconn version` reads it.
	t.Run("build stage", func(t *testing.T) {
		image, tag, _ := strings.Cut(build.base, ":")
		if image != "golang" {
			t.Fatalf("the build stage is FROM %s, want golang:<version>", build.base)
		}
		mod, err := modfile.Parse("go.mod", readFile(t, "../go.mod"), nil)
		if err != nil {
			t.Fatal(err)
		}
		goVersion := "v" + strings.SplitN(tag, "-", 2)[0]
		if !semver.IsValid(goVersion) || semver.Compare(semver.MajorMinor(goVersion), semver.MajorMinor("v"+mod.Go.Version)) < 0 {
			t.Errorf("the build stage's Go is %s; go.mod needs %s", tag, mod.Go.Version)
		}
		env := build.env(t)
		if env["GOTOOLCHAIN"] != "local" {
			t.Error("GOTOOLCHAIN=local: the image's Go, never a downloaded one")
		}
		builds := goBuilds(build)
		pkgs := map[string]goBuild{}
		for _, b := range builds {
			pkgs[b.pkg] = b
			if env["CGO_ENABLED"] != "0" && !strings.Contains(b.command, "CGO_ENABLED=0") {
				t.Errorf("%s is built with cgo possible: the final image has no libc", b.pkg)
			}
			if !strings.Contains(b.command, "-trimpath") {
				t.Errorf("%s is built without -trimpath", b.pkg)
			}
		}
		bin, ok := pkgs["./cmd/caddy-oauthconn"]
		if !ok {
			t.Fatal("no `go build … ./cmd/caddy-oauthconn`")
		}
		_ = caddy.CustomVersion // the variable the -X below sets; this fails to compile if it goes
		if !strings.Contains(bin.command, "-X github.com/caddyserver/caddy/v2.CustomVersion=caddy-oauthconn/${VERSION}") {
			t.Error("the binary's version is not stamped into caddy.CustomVersion")
		}
		if _, ok := pkgs["./deploy/healthcheck"]; !ok {
			t.Error("no `go build … ./deploy/healthcheck`: the final image has no other way to check health")
		}
	})

	var outputs []string
	for _, b := range goBuilds(build) {
		outputs = append(outputs, b.output)
	}
	files := copied(t, final, outputs)
	env := final.env(t)

	t.Run("final stage", func(t *testing.T) {
		if !strings.HasPrefix(final.base, "gcr.io/distroless/static") && final.base != "scratch" {
			t.Errorf("the final stage is FROM %s, want distroless/static or scratch", final.base)
		}
		if final.base == "scratch" {
			t.Error("scratch has no CA certificates or /etc/passwd: copy them in and drop this check")
		}
		if runs := final.all("RUN"); len(runs) > 0 {
			t.Errorf("Dockerfile:%d: RUN in the final stage, which has no shell", runs[0].line)
		}
		if adds := final.all("ADD"); len(adds) > 0 {
			t.Errorf("Dockerfile:%d: ADD in the final stage: COPY from a stage or the context", adds[0].line)
		}

		user := final.one(t, "USER").args
		uid, gid, _ := strings.Cut(user, ":")
		if uid == "" || uid == "0" || strings.Trim(uid, "0123456789") != "" || gid == "0" {
			t.Errorf("USER %s: want a numeric non-root uid:gid (Kubernetes' runAsNonRoot can check only a number)", user)
		}
		if strings.Contains(final.base, "distroless") && strings.HasSuffix(final.base, ":nonroot") && user != "65532:65532" {
			t.Errorf("USER %s: distroless's nonroot user is 65532:65532", user)
		}

		// Caddy writes only below its data and configuration directories,
		// both volumes whose mount points the user owns (a new volume
		// takes their ownership), so the root filesystem can be read-only.
		volumes := final.one(t, "VOLUME").exec(t)
		for _, v := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
			dir := env[v]
			if dir == "" || !slices.Contains(volumes, dir) {
				t.Errorf("%s=%q: want it set to one of the volumes %v", v, dir, volumes)
			}
			owned := false
			for _, in := range final.all("COPY") {
				if chown, _ := in.flag("chown"); chown == user && strings.HasSuffix(in.args, " "+dir) {
					owned = true
				}
			}
			if !owned {
				t.Errorf("%s (%s) is not created owned by %s: the user could not write to a new volume there", v, dir, user)
			}
		}

		entry := final.one(t, "ENTRYPOINT").exec(t)
		argv := append(entry, final.one(t, "CMD").exec(t)...)
		if len(entry) != 1 || files[entry[0]] != "build:/out/usr/bin/caddy-oauthconn" {
			t.Errorf("ENTRYPOINT %v: want the exec form of the built binary (copied: %v)", entry, files)
		}
		if len(argv) != 6 || argv[1] != "run" || argv[2] != "--config" || argv[4] != "--adapter" || argv[5] != "caddyfile" {
			t.Fatalf("ENTRYPOINT and CMD run %v; want caddy-oauthconn run --config <Caddyfile> --adapter caddyfile", argv)
		}
		if src := files[argv[3]]; src != "context:deploy/Caddyfile" {
			t.Errorf("the configuration %s comes from %q, want deploy/Caddyfile", argv[3], src)
		}

		hc := final.one(t, "HEALTHCHECK")
		for _, f := range []string{"interval", "timeout", "retries"} {
			if _, ok := hc.flag(f); !ok {
				t.Errorf("HEALTHCHECK without --%s", f)
			}
		}
		probe, ok := strings.CutPrefix(hc.args, "CMD ")
		if !ok {
			t.Fatalf("HEALTHCHECK %s: want CMD [...]", hc.args)
		}
		hcArgv := instruction{args: probe}.exec(t)
		if len(hcArgv) == 0 || files[hcArgv[0]] != "build:/out/usr/bin/healthcheck" {
			t.Errorf("HEALTHCHECK runs %v: want the exec form of the built deploy/healthcheck", hcArgv)
		}
		if final.one(t, "STOPSIGNAL").args != "SIGTERM" {
			t.Error("STOPSIGNAL SIGTERM: Caddy's graceful stop")
		}
	})

	// The image's default Caddyfile: it adapts and provisions, its proxy is
	// on loopback only, the health check reaches a route that exists, and
	// EXPOSE publishes the connect page, never the proxy.
	t.Run("default Caddyfile", func(t *testing.T) {
		c := adapt(t, "Caddyfile", readFile(t, "Caddyfile"))
		provision(t, "Caddyfile", c.raw)
		checkProxyConfinement(t, c)

		health, err := url.Parse(env["OAUTHCONN_HEALTHCHECK_URL"])
		if err != nil || health.Host == "" {
			t.Fatalf("OAUTHCONN_HEALTHCHECK_URL=%q: want the URL the healthcheck GETs", env["OAUTHCONN_HEALTHCHECK_URL"])
		}
		if health.Path != c.basePath()+"/livez" {
			t.Errorf("the health check GETs %s, want liveness (%s/livez): a store outage must not restart the container", health.Path, c.basePath())
		}
		servers := c.listensOn(health.Port())
		if len(servers) != 1 {
			t.Fatalf("%d servers listen on the health check's port %s", len(servers), health.Port())
		}
		for _, s := range servers {
			hops, answered := serve(t, s, health.String())
			if !answered || last(hops).handler != "oauthconn_connect" || has(hops, "authentication") {
				t.Errorf("GET %s passes %v, want oauthconn_connect with no authentication before it", health, handlers(hops))
			}
		}

		exposed := final.one(t, "EXPOSE")
		for _, p := range strings.Fields(exposed.args) {
			p = strings.TrimSuffix(p, "/tcp")
			if len(c.listensOn(p)) == 0 {
				t.Errorf("EXPOSE %s: nothing listens there", p)
			}
			for name, s := range c.listensOn(p) {
				raw, _ := json.Marshal(s)
				if bytes.Contains(raw, []byte(`"oauthconn_proxy"`)) {
					t.Errorf("EXPOSE %s publishes server %s, which has the proxy routes", p, name)
				}
			}
		}
		if !strings.Contains(exposed.args, health.Port()) {
			t.Errorf("EXPOSE %s does not publish the connect page's port %s", exposed.args, health.Port())
		}

		// The admin endpoint: not on the loopback an app in the same
		// network namespace shares, but a socket in a volume.
		addr, err := caddy.ParseNetworkAddress(c.Admin.Listen)
		if err != nil || !addr.IsUnixNetwork() {
			t.Errorf("admin %q: want a unix socket", c.Admin.Listen)
		} else if !slices.ContainsFunc(final.one(t, "VOLUME").exec(t), func(v string) bool { return under(addr.Host, v) }) {
			t.Errorf("admin socket %s is not in a volume: the root filesystem is read-only", addr.Host)
		}
	})

	// The build context: every file the build reads is in it, and the
	// repository's history is not.
	t.Run(".dockerignore", func(t *testing.T) {
		f, err := os.Open("../.dockerignore")
		if err != nil {
			t.Fatal(err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		pm, err := patternmatcher.New(patterns)
		if err != nil {
			t.Fatal(err)
		}
		excluded := func(p string) bool {
			ex, err := pm.MatchesOrParentMatches(p)
			if err != nil {
				t.Fatal(err)
			}
			return ex
		}
		needed := []string{"go.mod", "go.sum"}
		for _, src := range files {
			if p, ok := strings.CutPrefix(src, "context:"); ok {
				needed = append(needed, p)
			}
		}
		needed = append(needed, goFiles(t, "./cmd/caddy-oauthconn", "./deploy/healthcheck")...)
		for _, p := range needed {
			if excluded(p) {
				t.Errorf("%s is needed by the build but .dockerignore leaves it out", p)
			}
		}
		for _, p := range []string{".git/config", "e2e/flow_test.go", "deploy/kubernetes/deployment.yaml"} {
			if !excluded(p) {
				t.Errorf("%s is in the build context", p)
			}
		}
	})
}

// goFiles lists, relative to the repository, the files of this module that
// building pkgs reads: Go files and embedded files of every package they
// depend on.
func goFiles(t *testing.T, pkgs ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json"}, pkgs...)...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			Dir    string
			Module *struct{ Main bool }
			GoFiles, EmbedFiles, CgoFiles, SFiles,
			HFiles, SysoFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, list := range [][]string{p.GoFiles, p.EmbedFiles, p.CgoFiles, p.SFiles, p.HFiles, p.SysoFiles} {
			for _, f := range list {
				files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if len(files) == 0 {
		t.Fatal("go list found no files")
	}
	return files
}
