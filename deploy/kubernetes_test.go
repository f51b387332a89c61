package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// manifests are deploy/kubernetes's objects, decoded strictly into
// Kubernetes' API types: an unknown or misspelt field, a wrong type or an
// unknown kind fails the test, as `kubectl apply --validate=strict` would.
type manifests struct {
	deployment      *appsv1.Deployment
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	services        map[string]*corev1.Service
	ingresses       map[string]*networkingv1.Ingress
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	m := &manifests{
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps:      map[string]*corev1.ConfigMap{},
		secrets:         map[string]*corev1.Secret{},
		services:        map[string]*corev1.Service{},
		ingresses:       map[string]*networkingv1.Ingress{},
	}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	for _, file := range files {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(readFile(t, file))))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, gvk, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				if m.deployment != nil {
					t.Fatalf("%s: a second Deployment", file)
				}
				m.deployment = o
			case *corev1.ServiceAccount:
				m.serviceAccounts[o.Name] = o
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = o
			case *corev1.Secret:
				m.secrets[o.Name] = o
			case *corev1.Service:
				m.services[o.Name] = o
			case *networkingv1.Ingress:
				m.ingresses[o.Name] = o
			default:
				t.Fatalf("%s: %s is not checked by this test", file, gvk)
			}
		}
	}
	if m.deployment == nil {
		t.Fatal("no Deployment")
	}
	return m
}

// secretValue is a Secret's value for key, from data or stringData.
func secretValue(s *corev1.Secret, key string) ([]byte, bool) {
	if v, ok := s.StringData[key]; ok {
		return []byte(v), true
	}
	v, ok := s.Data[key]
	return v, ok
}

// sidecar is the container that runs caddy-oauthconn, and whether it is a
// native sidecar (an init container that keeps running).
func sidecar(t *testing.T, pod *corev1.PodSpec) (*corev1.Container, bool) {
	t.Helper()
	var found *corev1.Container
	native := false
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		if len(c.Args) > 0 && c.Args[0] == "run" {
			found = c
			native = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if len(c.Args) > 0 && c.Args[0] == "run" {
			if found != nil {
				t.Fatal("two containers run caddy-oauthconn")
			}
			found = c
		}
	}
	if found == nil {
		t.Fatal("no container runs `caddy-oauthconn run`")
	}
	return found, native
}

// mountFor finds the container's mount that holds file.
func mountFor(c *corev1.Container, file string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	for _, vm := range c.VolumeMounts {
		if under(file, vm.MountPath) && len(vm.MountPath) > len(best.MountPath) {
			best = vm
		}
	}
	return best, best.Name != ""
}

func volume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// containerPort resolves a probe's or Service's port against a container.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

var filePlaceholder = regexp.MustCompile(`\{file\.([^}]+)\}`)

func TestKubernetes(t *testing.T) {
	m := loadManifests(t)
	pod := &m.deployment.Spec.Template.Spec
	proxy, native := sidecar(t, pod)

	// The Caddyfile: the ConfigMap key mounted where --config points.
	i := slices.Index(proxy.Args, "--config")
	if i < 0 || i+1 >= len(proxy.Args) {
		t.Fatalf("%s runs %v: no --config", proxy.Name, proxy.Args)
	}
	if j := slices.Index(proxy.Args, "--adapter"); j < 0 || j+1 >= len(proxy.Args) || proxy.Args[j+1] != "caddyfile" {
		t.Errorf("%s runs %v: want --adapter caddyfile", proxy.Name, proxy.Args)
	}
	configPath := proxy.Args[i+1]
	vm, ok := mountFor(proxy, configPath)
	if !ok {
		t.Fatalf("%s: nothing is mounted at %s", proxy.Name, configPath)
	}
	v := volume(pod, vm.Name)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("%s is not mounted from a ConfigMap", configPath)
	}
	cm := m.configMaps[v.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("ConfigMap %s is not among the manifests", v.ConfigMap.Name)
	}
	key := strings.TrimPrefix(strings.TrimPrefix(configPath, vm.MountPath), "/")
	caddyfileText, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, key)
	}
	c := adapt(t, "ConfigMap "+cm.Name+" "+key, []byte(caddyfileText))
	checkProxyConfinement(t, c)

	// Every file the configuration reads is in a volume of the sidecar
	// that has it: {file.…} placeholders and the Vault login's token.
	var store struct {
		Module string `json:"module"`
		Auth   *struct {
			Method  string `json:"method"`
			Role    string `json:"role"`
			SATFile string `json:"service_account_token_file"`
		} `json:"auth"`
	}
	if len(c.Apps.OAuthConn.Store) == 0 {
		t.Fatal("no store block: the embedded file store, in an emptyDir, is lost with the Pod; use Vault")
	}
	if err := json.Unmarshal(c.Apps.OAuthConn.Store, &store); err != nil {
		t.Fatalf("store: %v", err)
	}
	if store.Module != "vault" || store.Auth == nil || store.Auth.Method != "kubernetes" || store.Auth.Role == "" {
		t.Fatalf("the store is %s: want vault with auth kubernetes and a role (the file store in an emptyDir is lost with the Pod)", c.Apps.OAuthConn.Store)
	}
	files := map[string][]byte{} // what each read file holds, from the manifests
	reads := []string{store.Auth.SATFile}
	for _, match := range filePlaceholder.FindAllStringSubmatch(caddyfileText, -1) {
		reads = append(reads, match[1])
	}
	for _, f := range reads {
		vm, ok := mountFor(proxy, f)
		if !ok {
			t.Errorf("%s reads %s, which no volume of %s holds", cm.Name, f, proxy.Name)
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(f, vm.MountPath), "/")
		v := volume(pod, vm.Name)
		switch {
		case v == nil:
			t.Errorf("volume %s is not in the Pod", vm.Name)
		case v.Secret != nil:
			s := m.secrets[v.Secret.SecretName]
			if s == nil {
				t.Errorf("Secret %s is not among the manifests", v.Secret.SecretName)
				continue
			}
			if files[f], ok = secretValue(s, rel); !ok {
				t.Errorf("%s reads %s: Secret %s has no key %s", cm.Name, f, s.Name, rel)
			}
		case v.Projected != nil:
			found := false
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil && src.ServiceAccountToken.Path == rel {
					found = true
				}
			}
			if !found {
				t.Errorf("%s reads %s: volume %s projects no service account token there", cm.Name, f, v.Name)
			}
			files[f] = []byte("a.service-account.token")
		default:
			t.Errorf("%s reads %s from volume %s, neither a Secret nor a projected token", cm.Name, f, v.Name)
		}
	}
	if store.Auth.SATFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("the Vault login reads %s; the README documents the in-cluster path", store.Auth.SATFile)
	}

	// Provisioning with those files in place: as shipped, the connect page
	// has no password hash and the proxy refuses to start rather than serve
	// it unprotected; with one, every module provisions (public_url is
	// https, the connectors and the Vault store are valid).
	t.Run("provision", func(t *testing.T) {
		root := t.TempDir()
		for f, content := range files {
			p := filepath.Join(root, filepath.FromSlash(f))
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		raw := string(c.raw)
		for f := range files {
			raw = strings.ReplaceAll(raw, "{file."+f+"}", "{file."+filepath.ToSlash(filepath.Join(root, f))+"}")
		}
		var hashFile string
		for f, content := range files {
			if strings.HasSuffix(f, "password-hash") {
				hashFile = filepath.Join(root, f)
				if len(content) != 0 {
					t.Errorf("%s ships a password hash: leave it empty, so that each deployment sets its own", f)
				}
			}
		}
		if hashFile == "" {
			t.Fatal("no basic_auth password hash is read from the Secret")
		}
		var cfg caddy.Config
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{"default": {BaseLog: caddy.BaseLog{Level: "FATAL"}}}}
		t.Setenv("XDG_DATA_HOME", t.TempDir())
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		if err := caddy.Validate(&cfg); err == nil || !strings.Contains(err.Error(), "username and password are required") {
			t.Errorf("without a password hash, provisioning gives %v; want basic_auth's refusal", err)
		}
		hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hashFile, hash, 0o600); err != nil {
			t.Fatal(err)
		}
		provision(t, "ConfigMap "+cm.Name, []byte(raw))
	})

	// The probes reach oauthconn_connect's liveness and readiness routes on
	// a port of the sidecar, on the Pod's address (where the kubelet
	// connects), with no authentication in the way.
	t.Run("probes", func(t *testing.T) {
		base := c.basePath()
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{
			{"startupProbe", proxy.StartupProbe, base + "/livez"},
			{"livenessProbe", proxy.LivenessProbe, base + "/livez"},
			{"readinessProbe", proxy.ReadinessProbe, base + "/readyz"},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: want an httpGet probe of %s", p.kind, p.path)
				continue
			}
			get := p.probe.HTTPGet
			if get.Path != p.path {
				// Liveness on readiness would restart the proxy during a
				// store outage and drop refreshed tokens not yet written.
				t.Errorf("%s GETs %s, want %s", p.kind, get.Path, p.path)
			}
			if get.Host != "" || (get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP) {
				t.Errorf("%s: host %q, scheme %q: want the Pod's address over http", p.kind, get.Host, get.Scheme)
			}
			port, ok := containerPort(proxy, get.Port)
			if !ok {
				t.Errorf("%s: port %s is not a port of %s", p.kind, get.Port.String(), proxy.Name)
				continue
			}
			servers := c.listensOn(strconv.Itoa(int(port)))
			if len(servers) != 1 {
				t.Errorf("%s: %d servers listen on %d", p.kind, len(servers), port)
			}
			for name, s := range servers {
				for _, l := range s.Listen {
					if isLoopback(l) {
						t.Errorf("%s: server %s listens on %s, which the kubelet cannot reach", p.kind, name, l)
					}
				}
				target := "http://10.1.2.3:" + strconv.Itoa(int(port)) + get.Path
				hops, answered := serve(t, s, target)
				if !answered || last(hops).handler != "oauthconn_connect" || has(hops, "authentication") {
					t.Errorf("%s: GET %s passes %v, want oauthconn_connect and no authentication", p.kind, target, handlers(hops))
				}
			}
		}
		if !native {
			t.Log("the sidecar is a regular container: it may start after the app and stop before it")
		}
	})

	// The connect page is protected; the probes' routes are the only ones
	// of oauthconn_connect that are not.
	t.Run("connect page", func(t *testing.T) {
		port, _ := containerPort(proxy, proxy.ReadinessProbe.HTTPGet.Port)
		for _, s := range c.listensOn(strconv.Itoa(int(port))) {
			for _, p := range []string{"/", "/connectors", "/connectors/sharepoint/authorize", "/callback", "/connectors/notion/disconnect", "/livez/../connectors", "/LIVEZ/x"} {
				target := "http://connect.example.com" + c.basePath() + p
				hops, _ := serve(t, s, target)
				if i := slices.IndexFunc(hops, func(h hop) bool { return h.handler == "authentication" }); i < 0 || last(hops).handler != "oauthconn_connect" {
					t.Errorf("GET %s passes %v: want authentication, then oauthconn_connect", target, handlers(hops))
				}
			}
		}
	})

	// The app reaches the proxy on the Pod's loopback (containers of a Pod
	// share its network namespace), and holds no secret of the proxy's.
	t.Run("app", func(t *testing.T) {
		if pod.HostNetwork {
			t.Error("hostNetwork: the proxy's loopback would be the node's")
		}
		apps := 0
		for i := range pod.Containers {
			app := &pod.Containers[i]
			if app == proxy {
				continue
			}
			for _, e := range app.Env {
				u, err := url.Parse(e.Value)
				if err != nil || u.Scheme != "http" || u.Host == "" {
					continue
				}
				if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
					t.Errorf("%s %s=%s: want the proxy on a loopback address", app.Name, e.Name, e.Value)
					continue
				}
				servers := c.listensOn(u.Port())
				if len(servers) != 1 {
					t.Errorf("%s %s=%s: %d servers listen on that port", app.Name, e.Name, e.Value, len(servers))
				}
				for _, s := range servers {
					hops, answered := serve(t, s, e.Value+"/anything")
					if !answered || last(hops).handler != "oauthconn_proxy" {
						t.Errorf("%s %s=%s: the request passes %v, want oauthconn_proxy", app.Name, e.Name, e.Value, handlers(hops))
					}
				}
				apps++
			}
			for _, vm := range app.VolumeMounts {
				for _, pvm := range proxy.VolumeMounts {
					if vm.Name == pvm.Name {
						t.Errorf("%s mounts %s, the proxy's volume", app.Name, vm.Name)
					}
				}
			}
			if len(app.EnvFrom) > 0 {
				t.Errorf("%s takes its environment from %v: check it holds none of the proxy's secrets", app.Name, app.EnvFrom)
			}
		}
		if apps == 0 {
			t.Error("no app container is given the proxy's URL")
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Error("automountServiceAccountToken: false, else the app gets the token that logs in to Vault")
		}
		if sa := m.serviceAccounts[pod.ServiceAccountName]; sa == nil {
			t.Errorf("ServiceAccount %q is not among the manifests", pod.ServiceAccountName)
		}
	})

	// Least privilege and bounded resources for every container.
	t.Run("security and resources", func(t *testing.T) {
		psc := pod.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Error("the Pod's securityContext: runAsNonRoot: true and a non-zero runAsUser")
		}
		if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Error("the Pod's seccompProfile: RuntimeDefault")
		}
		all := append(slices.Clone(pod.InitContainers), pod.Containers...)
		for _, ct := range all {
			sc := ct.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem: true", ct.Name)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation: false", ct.Name)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities: drop ALL, add none", ct.Name)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := ct.Resources.Requests[r]; !ok || q.IsZero() {
					t.Errorf("%s: no %s request", ct.Name, r)
				}
			}
			limit, ok := ct.Resources.Limits[corev1.ResourceMemory]
			if !ok || limit.Cmp(ct.Resources.Requests[corev1.ResourceMemory]) < 0 {
				t.Errorf("%s: want a memory limit at least its request", ct.Name)
			}
		}
		for _, v := range pod.Volumes {
			var mode *int32
			switch {
			case v.Secret != nil:
				mode = v.Secret.DefaultMode
			case v.Projected != nil:
				mode = v.Projected.DefaultMode
			default:
				continue
			}
			// YAML reads 0440 as octal; 440 would be 0o670.
			if mode == nil {
				t.Errorf("volume %s: no defaultMode: want it read-only and not world-readable, such as 0440", v.Name)
			} else if *mode&0o227 != 0 {
				t.Errorf("volume %s: defaultMode %#o: want it read-only and not world-readable, such as 0440", v.Name, *mode)
			}
		}
		if limit := proxy.Resources.Limits[corev1.ResourceMemory]; limit.Cmp(resource.MustParse("128Mi")) < 0 {
			t.Errorf("%s: a memory limit of %s is too tight for Caddy", proxy.Name, limit.String())
		}
		if g := m.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil && *g < 20 {
			t.Errorf("terminationGracePeriodSeconds %d: stopping takes up to 10 s to write refreshed tokens", *g)
		}
	})

	// With a read-only root filesystem, Caddy's data and configuration
	// directories (and the admin socket in the latter) are writable
	// volumes; the admin socket is not on the loopback the app shares.
	t.Run("writable directories", func(t *testing.T) {
		env := map[string]string{}
		for _, e := range proxy.Env {
			env[e.Name] = e.Value
		}
		for _, name := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
			dir := env[name]
			vm, ok := mountFor(proxy, dir+"/caddy")
			if dir == "" || !ok || vm.ReadOnly || vm.MountPath != dir {
				t.Errorf("%s=%q: want it to be a writable volume's mount", name, dir)
				continue
			}
			if v := volume(pod, vm.Name); v == nil || (v.EmptyDir == nil && v.PersistentVolumeClaim == nil) {
				t.Errorf("%s is on volume %s: want an emptyDir (with Vault) or a PersistentVolumeClaim", name, vm.Name)
			}
		}
		addr, err := caddy.ParseNetworkAddress(c.Admin.Listen)
		if !c.Admin.Disabled && (err != nil || !addr.IsUnixNetwork()) {
			t.Errorf("admin %q: the app shares the Pod's loopback; use a unix socket in a volume of the sidecar, or admin off", c.Admin.Listen)
		} else if !c.Admin.Disabled {
			if vm, ok := mountFor(proxy, addr.Host); !ok || vm.ReadOnly {
				t.Errorf("the admin socket %s is not in a writable volume of %s", addr.Host, proxy.Name)
			}
		}
	})

	// The Service exposes the connect page and only it; the Ingress serves
	// it at public_url over TLS.
	t.Run("service and ingress", func(t *testing.T) {
		podLabels := labels.Set(m.deployment.Spec.Template.Labels)
		connect := map[string]bool{}
		for _, svc := range m.services {
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				t.Errorf("Service %s does not select the Pods", svc.Name)
			}
			for _, sp := range svc.Spec.Ports {
				port, ok := containerPort(proxy, sp.TargetPort)
				if !ok {
					t.Errorf("Service %s port %s: target %s is not a port of %s", svc.Name, sp.Name, sp.TargetPort.String(), proxy.Name)
					continue
				}
				for name, s := range c.listensOn(strconv.Itoa(int(port))) {
					raw, _ := json.Marshal(s)
					if bytes.Contains(raw, []byte(`"oauthconn_proxy"`)) {
						t.Errorf("Service %s exposes server %s, which has the proxy routes", svc.Name, name)
					}
				}
				connect[svc.Name+"/"+sp.Name] = true
			}
		}
		public, err := url.Parse(c.Apps.OAuthConn.PublicURL)
		if err != nil || public.Scheme != "https" {
			t.Fatalf("public_url %q: want https", c.Apps.OAuthConn.PublicURL)
		}
		if len(m.ingresses) == 0 {
			t.Fatal("no Ingress")
		}
		for _, ing := range m.ingresses {
			tls := false
			for _, it := range ing.Spec.TLS {
				tls = tls || slices.Contains(it.Hosts, public.Hostname())
			}
			if !tls {
				t.Errorf("Ingress %s has no TLS for %s", ing.Name, public.Hostname())
			}
			for _, rule := range ing.Spec.Rules {
				if rule.Host != public.Hostname() {
					t.Errorf("Ingress %s serves %s; public_url is %s", ing.Name, rule.Host, public)
				}
				for _, p := range rule.HTTP.Paths {
					b := p.Backend.Service
					if b == nil || !connect[b.Name+"/"+b.Port.Name] {
						t.Errorf("Ingress %s path %s: backend %v is not a Service port of the connect page", ing.Name, p.Path, b)
					}
					if p.PathType == nil || *p.PathType != networkingv1.PathTypePrefix || !under(c.basePath(), p.Path) {
						t.Errorf("Ingress %s path %s: want a Prefix path that covers %s", ing.Name, p.Path, c.basePath())
					}
				}
			}
		}
	})
}
