package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/peapod-cri/peapod/integration/testenv"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The harness of the stock-kubelet test (kubelet_e2e_test.go): an
// unmodified kubelet, standalone (no API server), running static pods from a
// directory on peapod. Everything it creates is test-owned: its root, cert
// and log directories under a temp dir, its cgroups under a cgroup root of
// the test's own (cgroupRoot), its API on 127.0.0.1 only. The one place the
// kubelet writes outside them is hard-coded upstream (the device-plugin
// socket in /var/lib/kubelet/device-plugins, the log symlinks in
// /var/log/containers); hostPaths removes what it added there.

// kubeletNode is the kubelet's node name; static pods are named
// "<manifest name>-<node>".
const kubeletNode = "e2e-node"

// kubelet is one standalone kubelet under test.
type kubelet struct {
	t          *testing.T
	dir        string // everything of the kubelet's: root, certs, manifests, logs
	rootDir    string
	manifests  string
	podLogs    string
	logPath    string
	cgroupRoot string // absolute, in every hierarchy: "/peapod-e2e-<rand>"
	port       int
	base       string // "https://127.0.0.1:<port>"
	cmd        *exec.Cmd
	exited     chan struct{}
	http       *http.Client
}

// kubeletConfig is the KubeletConfiguration for a standalone node on this
// host. Each non-default says why.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# API on loopback only; anonymous and AlwaysAllow because nothing but the
# test can reach it, and there is no API server to authorize against.
address: 127.0.0.1
port: %[1]d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
staticPodPath: %[2]s
fileCheckFrequency: 1s
syncFrequency: 10s
containerRuntimeEndpoint: unix://%[3]s
imageServiceEndpoint: unix://%[3]s
serializeImagePulls: false
# cgroups: the driver peapod runs with (cgroupfs, or systemd in the guest
# of make test-cgroupv2-full), all of the kubelet's under a root of the
# test's own; node allocatable is not enforced on it.
cgroupDriver: %[9]s
cgroupRoot: %[4]s
cgroupsPerQOS: true
enforceNodeAllocatable: []
%[8]s# A shared development host: swap state, kernel defaults and iptables are
# not the kubelet's to judge or change; no negative oom_score_adj (root
# lacks CAP_SYS_RESOURCE here).
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
oomScoreAdj: 0
# No image GC and no eviction: the host's disk and memory use are not the
# test's, and static pods should not be judged by them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi"}
resolvConf: %[5]s
podLogsDir: %[6]s
volumePluginDir: %[7]s
`

// startKubelet starts a kubelet on the peapod at socket and waits for its
// API; extraArgs are added to its flags (--kubeconfig for an API server).
// Cleanup removes every manifest, waits for the pods to be torn down,
// stops the kubelet and removes what it left.
func startKubelet(t *testing.T, bin, socket, cgroupRoot string, extraArgs ...string) *kubelet {
	t.Helper()
	dir, err := os.MkdirTemp("", "peapod-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{
		t: t, dir: dir,
		rootDir:    filepath.Join(dir, "root"),
		manifests:  filepath.Join(dir, "manifests"),
		podLogs:    filepath.Join(dir, "pod-logs"),
		logPath:    filepath.Join(dir, "kubelet.log"),
		cgroupRoot: cgroupRoot,
		exited:     make(chan struct{}),
		// The kubelet serves a self-signed certificate it made at start.
		// Stretched in the emulated guest, where the kubelet answers slowly.
		http: &http.Client{Timeout: 15 * time.Second * timeoutScale, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		}},
	}
	for _, d := range []string{k.rootDir, k.manifests, k.podLogs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.0.0.10\nsearch e2e.svc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k.port = freeTCPPort(t)
	k.base = fmt.Sprintf("https://127.0.0.1:%d", k.port)
	conf := filepath.Join(dir, "kubelet.yaml")
	cfg := fmt.Sprintf(kubeletConfig, k.port, k.manifests, socket, cgroupRoot, resolv, k.podLogs,
		filepath.Join(dir, "volume-plugins"), cgroupV1Override(), testenv.NodeCgroupDriver())
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(k.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", conf, "--root-dir", k.rootDir,
		"--cert-dir", filepath.Join(dir, "pki"), "--hostname-override", kubeletNode, "--v", "1"}
	k.cmd = exec.Command(bin, append(args, extraArgs...)...)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kubelet: %v", err)
	}
	logf.Close()
	go func() { k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(k.destroy)

	deadline := time.Now().Add(90 * time.Second)
	for {
		if resp, err := k.http.Get(k.base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return k
			}
		}
		select {
		case <-k.exited:
			t.Fatalf("kubelet exited at start: %v\n%s", k.cmd.ProcessState, k.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubelet API not up after 90s:\n%s", k.logTail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (k *kubelet) logTail(n int) string {
	data, _ := os.ReadFile(k.logPath)
	return tail(string(data), n)
}

// destroy tears the pods down through the kubelet (manifests removed), then
// stops it and removes its directory and mounts.
func (k *kubelet) destroy() {
	entries, _ := os.ReadDir(k.manifests)
	for _, e := range entries {
		os.Remove(filepath.Join(k.manifests, e.Name()))
	}
	deadline := time.Now().Add(60 * time.Second)
wait:
	for time.Now().Before(deadline) {
		if pods, err := k.pods(); err == nil && len(pods) == 0 {
			break
		}
		select {
		case <-k.exited:
			break wait // a kubelet that died (kubelet_features_test.go) tears nothing down
		case <-time.After(200 * time.Millisecond):
		}
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(15 * time.Second):
		k.t.Errorf("kubelet did not exit 15s after SIGTERM")
		k.cmd.Process.Kill()
		<-k.exited
	}
	if k.t.Failed() {
		k.t.Logf("kubelet log (%s):\n%s", k.logPath, k.logTail(80))
	}
	// The kubelet bind-mounts its root onto itself (rshared); pods' volumes
	// may still be mounted below it if a teardown failed.
	m := mountsUnder(k.dir)
	for i := len(m) - 1; i >= 0; i-- {
		syscall.Unmount(m[i], syscall.MNT_DETACH)
	}
	if os.Getenv("PEAPOD_KUBELET_KEEP") == "" {
		os.RemoveAll(k.dir)
	}
}

// fullName is the name the kubelet gives a static pod from a manifest.
func fullName(manifest string) string { return manifest + "-" + kubeletNode }

// apply writes a static pod manifest (atomically: the kubelet ignores
// dot files).
func (k *kubelet) apply(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	data, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(k.manifests, "."+pod.Name+".json")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.manifests, pod.Name+".json")); err != nil {
		t.Fatal(err)
	}
}

// remove deletes a static pod's manifest.
func (k *kubelet) remove(t *testing.T, manifest string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.manifests, manifest+".json")); err != nil {
		t.Fatal(err)
	}
}

// get does a GET on the kubelet's API and returns the body of a 200.
func (k *kubelet) get(path string) ([]byte, error) {
	resp, err := k.http.Get(k.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// pods lists the kubelet's pods with their status (/pods fills in static
// pods' status when there is no API server).
func (k *kubelet) pods() ([]corev1.Pod, error) {
	body, err := k.get("/pods")
	if err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("decode /pods: %w", err)
	}
	return list.Items, nil
}

// pod returns the static pod from manifest, or nil when the kubelet has none.
func (k *kubelet) pod(manifest string) (*corev1.Pod, error) {
	pods, err := k.pods()
	if err != nil {
		return nil, err
	}
	for i := range pods {
		if pods[i].Name == fullName(manifest) {
			return &pods[i], nil
		}
	}
	return nil, nil
}

// waitPod polls /pods until cond holds for the pod from manifest.
func (k *kubelet) waitPod(t *testing.T, manifest string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	for {
		p, err := k.pod(manifest)
		if err == nil && p != nil {
			last = p
			if cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			status, _ := json.MarshalIndent(lastStatus(last), "", " ")
			t.Fatalf("%s: timed out after %s waiting for %s; last status:\n%s", manifest, timeout, what, status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func lastStatus(p *corev1.Pod) any {
	if p == nil {
		return "no such pod"
	}
	return p.Status
}

// logs reads a container's log through /containerLogs.
func (k *kubelet) logs(manifest, container string) (string, error) {
	body, err := k.get(fmt.Sprintf("/containerLogs/%s/%s/%s", e2eNamespace, fullName(manifest), container))
	return string(body), err
}

// run runs a command in a container through /run (ExecSync). The kubelet
// splits cmd on spaces, so arguments cannot hold any.
func (k *kubelet) run(manifest, container string, cmd ...string) (string, error) {
	u := fmt.Sprintf("%s/run/%s/%s/%s?cmd=%s", k.base, e2eNamespace, fullName(manifest), container,
		url.QueryEscape(strings.Join(cmd, " ")))
	resp, err := k.http.Post(u, "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("POST /run %v: %s: %s", cmd, resp.Status, bytes.TrimSpace(body))
	}
	return string(body), nil
}

// exec runs a command in a container through /exec: the kubelet upgrades
// the connection to SPDY and proxies it to peapod's streaming server.
func (k *kubelet) exec(ctx context.Context, manifest, container string, cmd ...string) (stdout, stderr string, err error) {
	q := url.Values{"output": {"1"}, "error": {"1"}, "command": cmd}
	u, err := url.Parse(fmt.Sprintf("%s/exec/%s/%s/%s?%s", k.base, e2eNamespace, fullName(manifest), container, q.Encode()))
	if err != nil {
		return "", "", err
	}
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: k.base, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, "POST", u)
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

// sandboxesOf finds the pod's sandboxes in the runtime by the kubelet's
// labels.
func sandboxesOf(t *testing.T, rt runtimeapi.RuntimeServiceClient, manifest string) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := rt.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": fullName(manifest)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

// containersOf lists the containers the runtime has in a sandbox.
func containersOf(t *testing.T, rt runtimeapi.RuntimeServiceClient, sandbox string) []*runtimeapi.Container {
	t.Helper()
	resp, err := rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandbox}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Containers
}

// sandboxPID is the PID of the sandbox's pause (keeper) process, from the
// verbose status both peapod and containerd give ("pid" in "info").
func sandboxPID(t *testing.T, rt runtimeapi.RuntimeServiceClient, sandbox string) int {
	t.Helper()
	resp, err := rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Pid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	return info.Pid
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ---------------------------------------------------------------- cgroup root

// cgroupHierarchies lists the mount points of the host's cgroup
// hierarchies (v1 controllers and named ones; on v2, the one mount).
func cgroupHierarchies() []string { return testenv.CgroupHierarchies() }

// makeCgroupRoot creates the kubelet's cgroup root in every hierarchy (the
// kubelet refuses a root that does not exist) and removes the whole tree
// in cleanup, deepest first. Under the systemd driver the kubelet names the
// root "/<name>" and finds it as the slice /<name>.slice (a name without
// dashes): that slice is started as a unit of systemd's.
func makeCgroupRoot(t *testing.T) string {
	t.Helper()
	if testenv.NodeCgroupDriver() == "systemd" {
		root := "/peapode2e" + randomSuffix()
		slice := root[1:] + ".slice"
		if out, err := exec.Command("systemctl", "start", slice).CombinedOutput(); err != nil {
			t.Fatalf("cgroup root: systemctl start %s: %v: %s", slice, err, out)
		}
		t.Cleanup(func() {
			exec.Command("systemctl", "stop", slice).Run()
			testenv.RemoveCgroup("/" + slice)
		})
		return root
	}
	root := "/peapod-e2e-" + randomSuffix()
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("cgroup root: %v", err)
		}
		// A new v1 cpuset starts empty; its tasks could run nowhere.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
		}
	}
	t.Cleanup(func() {
		testenv.RemoveCgroup(root)
	})
	return root
}

// kubeletCgroup is the cgroupfs path (from a hierarchy's root) of the
// kubelet's cgroup below root named by the parts (e.g. "kubepods",
// "burstable", "pod<uid>"): nested directories with cgroupfs; with
// systemd, nested slices whose names repeat their parents' with dashes
// ("-" in a part becomes "_"), as the kubelet's CgroupName.ToSystemd.
func kubeletCgroup(root string, parts ...string) string {
	if testenv.NodeCgroupDriver() != "systemd" {
		return filepath.Join(append([]string{root}, parts...)...)
	}
	name := strings.TrimPrefix(root, "/")
	p := "/" + name + ".slice"
	for _, part := range parts {
		name += "-" + strings.ReplaceAll(part, "-", "_")
		p += "/" + name + ".slice"
	}
	return p
}

// cgroupDir is the directory of a cgroup path in the hierarchy of a v1
// controller (or the v2 one).
func cgroupDir(controller, path string) string {
	for _, h := range cgroupHierarchies() {
		if filepath.Base(h) == controller || strings.Contains(filepath.Base(h), controller+",") ||
			strings.HasSuffix(filepath.Base(h), ","+controller) {
			return filepath.Join(h, path)
		}
	}
	return filepath.Join("/sys/fs/cgroup", path)
}

// ---------------------------------------------------------------- host paths

// The kubelet creates these whatever its configuration says: the
// device-plugin socket's directory is a constant of the device plugin API,
// and the container log symlinks' directory a constant of the kubelet.
const (
	devicePluginDir  = "/var/lib/kubelet/device-plugins"
	containerLogsDir = "/var/log/containers"
)

// hostPaths removes, in cleanup, what the test's kubelet adds to the
// host's fixed paths: its device-plugin socket and its container log
// symlinks (those pointing into its pod log directory), then each
// directory that did not exist before the test, if nothing else is left in
// it (another kubelet on the host may be using it).
func hostPaths(t *testing.T, podLogsOf func() string) {
	dirs := []string{containerLogsDir, devicePluginDir, filepath.Dir(devicePluginDir)}
	absent := map[string]bool{}
	for _, p := range dirs {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			absent[p] = true
		}
	}
	t.Cleanup(func() {
		if absent[devicePluginDir] {
			// And the device manager's record of allocations, written
			// once a device plugin (kubelet_features_test.go) allocated.
			os.Remove(filepath.Join(devicePluginDir, "kubelet.sock"))
			os.Remove(filepath.Join(devicePluginDir, "kubelet_internal_checkpoint"))
		}
		if logs := podLogsOf(); logs != "" {
			entries, _ := os.ReadDir(containerLogsDir)
			for _, e := range entries {
				link := filepath.Join(containerLogsDir, e.Name())
				if dst, err := os.Readlink(link); err == nil && strings.HasPrefix(dst, logs+"/") {
					os.Remove(link)
				}
			}
		}
		for _, p := range dirs {
			if absent[p] {
				os.Remove(p) // only when empty
			}
		}
	})
}

// ---------------------------------------------------------------- registry counter

var manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/[^/]+$`)

// pullCounter is a loopback proxy in front of the test registry that counts
// manifest requests per repository: one per image pull (or more when the
// client asks for the index first), none for a pull the kubelet skips.
type pullCounter struct {
	addr string
	mu   sync.Mutex
	n    map[string]int
}

func startPullCounter(t *testing.T, registry string) *pullCounter {
	t.Helper()
	c := &pullCounter{n: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: registry})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := manifestPath.FindStringSubmatch(r.URL.Path); m != nil {
			c.mu.Lock()
			c.n[m[1]]++
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return c
}

// manifests is the number of manifest requests for repo so far.
func (c *pullCounter) manifests(repo string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[repo]
}

// cgroupV1Override lets the kubelet run on a cgroup v1 host: since 1.35 it
// refuses v1 unless failCgroupV1 is false. On a v2 host the setting is left
// at its default, so the run is what a current node does.
func cgroupV1Override() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return ""
	}
	return "# cgroup v1 host: the kubelet refuses v1 by default since 1.35.\nfailCgroupV1: false\n"
}
