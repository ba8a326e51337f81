// Package e2enode runs the Kubernetes node e2e suite (k8s.io/kubernetes
// test/e2e_node, built into e2e_node.test by tools/e2e-node) against a
// private peapod: the suite runs etcd and the API server in-process and a
// real kubelet (v1.37.2, next to e2e_node.test) on peapod's socket. Every
// image it pulls is built here (images_test.go) and served by a loopback
// registry that peapod's registries.conf mirrors registry.k8s.io and
// docker.io to.
//
// The suite binds fixed ports (API server 6443, kubelet 10248/10250/10255)
// and fixed paths (/var/lib/kubelet, /var/log/pods), and decides "systemd"
// by finding systemd-run on PATH. So the test re-runs itself in a private
// mount and network namespace (unshare): its own loopback, ports, bridge
// and nftables; a private /var/lib/kubelet and /var/log/pods; systemd-run
// hidden (the kubelet is then started directly, cgroupfs). Cgroups are not
// namespaced: the kubelet gets a cgroup root of the test's own, and the
// kubelet and system cgroups the suite would put at the root are moved into
// it (or off) by flags.
//
// `make e2e-node` builds the binaries and runs TestE2ENode with
// E2E_NODE_DIR naming their directory; without it the test skips.
package e2enode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// innerEnv marks the re-run inside the private namespaces; its value is
// the cgroup root the outer run made.
const innerEnv = "PEAPOD_E2E_NODE_CGROUP_ROOT"

// Defaults of what the Kubernetes presubmit for containerd runs.
const (
	defaultFocus = `\[NodeConformance\]`
	defaultSkip  = `\[Flaky\]|\[Slow\]|\[Serial\]`
)

// The suite's own limit, and ours around it, both inside `go test
// -timeout` (make e2e-node gives 180m) so that cleanup always runs.
const (
	suiteTimeout = 150 * time.Minute
	runTimeout   = 160 * time.Minute
)

// nodeIP is the node's address: on the veth of the private network
// namespace that carries its default route.
const nodeIP = "10.254.254.1"

// kubeletPaths are the fixed paths the suite's kubelet uses, made private
// inside the mount namespace.
var kubeletPaths = []string{"/var/lib/kubelet", "/var/log/pods"}

func TestE2ENode(t *testing.T) {
	bin := os.Getenv("E2E_NODE_DIR")
	if bin == "" {
		t.Skip("run by `make e2e-node`: needs E2E_NODE_DIR (e2e_node.test, kubelet, ginkgo, agnhost and pause from tools/e2e-node)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, f := range []string{"e2e_node.test", "kubelet", "ginkgo", "agnhost", "pause", "localhost.crt", "localhost.key"} {
		if _, err := os.Stat(filepath.Join(bin, f)); err != nil {
			t.Fatalf("E2E_NODE_DIR: %v", err)
		}
	}
	if cg := os.Getenv(innerEnv); cg != "" {
		runInner(t, bin, cg)
		return
	}
	runOuter(t)
}

// runOuter prepares what needs the host (Debian packages for the images,
// the registry binary, the cgroup root, mount points) and re-runs the test
// in private mount and network namespaces, then removes what it made.
func runOuter(t *testing.T) {
	testenv.BusyboxRootfs(t)
	testenv.FetchDebs(t, debs...)
	if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
		testenv.StartRegistry(t) // installs Debian's docker-registry
	}
	cgRoot := makeCgroupRoot(t)
	for _, p := range kubeletPaths {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			// Only the empty mount point is left on the host; remove it.
			t.Cleanup(func() { os.Remove(p) })
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, runTimeout+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--net", "--propagation", "private", "--",
		os.Args[0], "-test.run", "^TestE2ENode$", "-test.v", "-test.timeout", (runTimeout + 4*time.Minute).String())
	cmd.Env = append(os.Environ(), innerEnv+"="+cgRoot)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Stopped gently first, so that the inner run's cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 2 * time.Minute
	if err := cmd.Run(); err != nil {
		t.Errorf("node e2e run in private namespaces: %v", err)
	}
}

// runInner runs in the private namespaces: registry, images, peapod, then
// the suite.
func runInner(t *testing.T, bin, cgRoot string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Loopback, and a default route through a veth pair of its own (this
	// kernel has no dummy devices): the API
	// server picks its advertise address from the default route. The
	// namespace has no way out, so nothing leaves the machine.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "e2e0", "type", "veth", "peer", "name", "e2e1"},
		{"link", "set", "e2e1", "up"},
		{"addr", "add", nodeIP + "/24", "dev", "e2e0"},
		{"link", "set", "e2e0", "up"},
		{"route", "add", "default", "dev", "e2e0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	work, err := os.MkdirTemp("", "peapod-e2enode-")
	if err != nil {
		t.Fatal(err)
	}
	// User-namespaced containers pass through it (see critest).
	if err := os.Chmod(work, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m := testenv.MountsUnder(work)
		for i := len(m) - 1; i >= 0; i-- {
			syscall.Unmount(m[i], syscall.MNT_DETACH)
		}
		// The kubelet's fixed paths are bound from directories in work:
		// unbound first, or work stays behind (seen: kubelet-path-0).
		for _, p := range kubeletPaths {
			syscall.Unmount(p, syscall.MNT_DETACH)
		}
		if err := os.RemoveAll(work); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	privateMounts(t, work)

	reportDir := os.Getenv("E2E_NODE_REPORT_DIR")
	if reportDir == "" {
		reportDir = filepath.Join(work, "report")
	}
	if err := os.MkdirAll(reportDir, 0o755); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	reg := testenv.StartRegistry(t)
	pushImages(t, reg, filepath.Join(bin, "agnhost"), filepath.Join(bin, "pause"))
	t.Logf("registry %s with the suite's images in %s", reg, time.Since(t0).Round(time.Second))

	var socket, processName, pidFile string
	switch rt := os.Getenv("E2E_NODE_RUNTIME"); rt {
	case "", "peapod":
		d := startPeapod(t, work, reg, reportDir)
		socket, processName, pidFile = d.socket, "peapod", d.pidFile
	case "containerd":
		c := startContainerd(t, work, reg, reportDir)
		socket, processName, pidFile = c.socket, "containerd", c.pidFile
	default:
		t.Fatalf("E2E_NODE_RUNTIME=%q: want peapod or containerd", rt)
	}
	if ctx.Err() != nil {
		t.Fatal("interrupted")
	}

	t1 := time.Now()
	rc := runSuite(ctx, t, bin, work, reportDir, suiteArgs{socket, processName, pidFile, cgRoot})
	took := time.Since(t1).Round(time.Second)
	t.Logf("node e2e ran in %s (exit status %d); report in %s", took, rc, reportDir)
	// The start-up race (docs/conformance.md): checked on every run.
	if d, err := registrationDelay(filepath.Join(reportDir, "kubelet.log")); err != nil {
		t.Errorf("kubelet start-up: %v", err)
	} else if d > maxRegistrationDelay {
		t.Errorf("the kubelet registered its node %s after its start, later than %s: CSINode initialisation may have given up", d.Round(time.Millisecond), maxRegistrationDelay)
	} else {
		t.Logf("the kubelet registered its node %s after its start", d.Round(time.Millisecond))
	}

	res, err := testenv.ReadGinkgoReport(filepath.Join(reportDir, "report.json"), 400)
	if err != nil {
		t.Fatalf("node e2e report: %v (see %s)", err, filepath.Join(reportDir, "e2e-node.log"))
	}
	var b strings.Builder
	for _, s := range res.Failed {
		fmt.Fprintf(&b, "FAIL: %s\n    %s\n", s.Name, s.Message)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(&b, "skipped: %s\n    %s\n", s.Name, s.Message)
	}
	summary := fmt.Sprintf("e2e-node: %d passed, %d failed, %d skipped", len(res.Passed), len(res.Failed), len(res.Skipped))
	fmt.Fprintf(&b, "%s (%s)\n", summary, took)
	fmt.Print(b.String())
	os.WriteFile(filepath.Join(reportDir, "summary.txt"), []byte(b.String()+summary+"\n"), 0o644)
	writeList(filepath.Join(reportDir, "passed.txt"), res.Passed)
	writeList(filepath.Join(reportDir, "failed.txt"), res.Failed)
	if len(res.Failed) > 0 {
		t.Errorf("%d node e2e specs failed (log: %s)", len(res.Failed), filepath.Join(reportDir, "e2e-node.log"))
	}
	// A focus that matches fewer specs (renamed upstream, a broken regexp)
	// must not pass as "0 failed".
	if v := os.Getenv("E2E_NODE_MIN_PASSED"); v != "" {
		min, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("E2E_NODE_MIN_PASSED=%q: %v", v, err)
		}
		if len(res.Passed) < min {
			t.Errorf("%d node e2e specs passed, want at least %d (E2E_NODE_MIN_PASSED)", len(res.Passed), min)
		}
	}
	if rc != 0 && len(res.Failed) == 0 {
		t.Errorf("the suite exited %d with no failed spec; see %s", rc, filepath.Join(reportDir, "e2e-node.log"))
	}
}

// privateMounts hides systemd-run (the suite would start the kubelet as a
// transient unit) and gives the kubelet's fixed paths directories of this
// run, inside the private mount namespace only.
func privateMounts(t *testing.T, work string) {
	if p, err := exec.LookPath("systemd-run"); err == nil {
		if err := syscall.Mount("/dev/null", p, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("hide %s: %v", p, err)
		}
		if _, err := exec.LookPath("systemd-run"); err == nil {
			// A bind of /dev/null is not executable: LookPath skips it.
			t.Fatalf("systemd-run still found on PATH after hiding %s", p)
		}
	}
	for i, p := range kubeletPaths {
		dir := filepath.Join(work, fmt.Sprintf("kubelet-path-%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(dir, p, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("private %s: %v", p, err)
		}
		// Shared, as on a node (a peer group of this namespace only: the
		// namespace was made private): containerd refuses a
		// Bidirectional volume below a kubelet root that is not ("is
		// mounted on /var/lib/kubelet but it is not a shared mount").
		if err := syscall.Mount("", p, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
			t.Fatalf("make %s shared: %v", p, err)
		}
	}
}

type suiteArgs struct {
	socket, processName, pidFile, cgRoot string
}

// kubeletConfig is the base configuration the suite reads and then adjusts
// (auth, static pod path, read-only port, kubelet/system cgroups): the
// upstream default (test/e2e_node/jenkins/default-kubelet-config.yaml)
// with the cgroup root of this run, and what this host needs: cgroup v1
// allowed, no negative oom_score_adj (root lacks CAP_SYS_RESOURCE), swap
// and kernel defaults not the kubelet's to judge on a shared host.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: %s
podCIDR: "10.100.0.0/24"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 250Mi
  nodefs.available: 10%%
  nodefs.inodesFree: 5%%
evictionMinimumReclaim:
  nodefs.available: 5%%
  nodefs.inodesFree: 5%%
serializeImagePulls: false
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
`

// runSuite runs e2e_node.test under the ginkgo CLI (parallel processes)
// and returns its exit status.
func runSuite(ctx context.Context, t *testing.T, bin, work, reportDir string, a suiteArgs) int {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	focus, skip := env("E2E_NODE_FOCUS", defaultFocus), env("E2E_NODE_SKIP", defaultSkip)
	procs := env("E2E_NODE_PROCS", "4")
	suiteDir := filepath.Join(work, "suite") // the suite writes kubeconfig, kubelet-config, static-pods* here
	if err := os.MkdirAll(suiteDir, 0o755); err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(suiteDir, "kubeletconfig.yaml")
	if err := os.WriteFile(kcPath, []byte(fmt.Sprintf(kubeletConfig, a.cgRoot)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The suite puts the kubelet in /kubelet and every other process of
	// the root cgroup in /system (cgroups are the host's: that would be
	// every process of the machine) and names /docker-daemon the runtime's.
	kubeletFlags := strings.Join([]string{
		"--kubelet-cgroups=" + a.cgRoot + "/kubelet",
		"--system-cgroups=",
		"--runtime-cgroups=" + a.cgRoot + "/runtime",
		// Without it the kubelet looks its node name up in DNS each
		// time it builds its Node object (twice before registering),
		// and the namespace's resolver never answers: 2x10 s, while
		// CSINode initialisation gives up ~19 s after start and the
		// node then stays NotReady (docs/conformance.md).
		"--node-ip=" + nodeIP,
	}, " ")
	logf, err := os.Create(filepath.Join(reportDir, "e2e-node.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{
		"--procs=" + procs, "--no-color", "-v", "--timeout=" + suiteTimeout.String(),
		"--focus=" + focus, "--skip=" + skip,
		"--output-dir=" + reportDir, "--json-report=report.json",
		filepath.Join(bin, "e2e_node.test"), "--",
		"--container-runtime-endpoint=unix://" + a.socket,
		"--container-runtime-process-name=" + a.processName,
		"--container-runtime-pid-file=" + a.pidFile,
		"--prepull-images=false",
		"--report-dir=" + reportDir,
		"--node-name=peapod-e2e-node",
		"--kubelet-config-file=" + kcPath,
		"--kubelet-flags=" + kubeletFlags,
	}
	// The suite runs some commands through sudo (the OOM killer specs
	// read /proc with `sudo cat`); it runs as root here, where sudo is
	// not installed: a sudo that just runs its command.
	shims := filepath.Join(suiteDir, "bin")
	if err := os.MkdirAll(shims, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shims, "sudo"), []byte("#!/bin/sh\nexec \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "ginkgo"), args...)
	cmd.Dir = suiteDir
	cmd.Env = append(os.Environ(), "PATH="+shims+":"+bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	t.Logf("ginkgo %s", strings.Join(args, " "))
	rc, err := testenv.RunSuite(cmd, time.Minute)
	if err != nil {
		t.Fatalf("ginkgo: %v", err)
	}
	return rc
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ---------------------------------------------------------------- report

func writeList(path string, specs []testenv.GinkgoSpec) {
	var b strings.Builder
	for _, s := range specs {
		b.WriteString(s.Name + "\n")
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
}

// ---------------------------------------------------------------- peapod

type daemon struct {
	dir, socket, pidFile string
	cgroupParent, bridge string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// testHandlerConfig is the test-handler runtime handler: the embedded
// runtime, or the external OCI runtime binary E2E_NODE_TEST_HANDLER_OCI
// names (e.g. /usr/bin/runc), so that the RuntimeClass specs run on it.
func testHandlerConfig() string {
	if bin := os.Getenv("E2E_NODE_TEST_HANDLER_OCI"); bin != "" {
		return fmt.Sprintf("[runtime_handlers.test-handler]\nruntime = \"oci\"\npath = %q\n", bin)
	}
	return "[runtime_handlers.test-handler]\nruntime = \"embedded\"\n"
}

// startPeapod starts a peapod with its own socket, root, state, relative
// cgroup parent, bridge and pod range (all inside this run's network
// namespace), the test-handler runtime handler, and registries.conf
// mirroring the upstream registries to reg.
func startPeapod(t *testing.T, work, reg, reportDir string) *daemon {
	bin := env("PEAPOD_BIN", "../../bin/peapod")
	dir := filepath.Join(work, "peapod")
	suffix := randomHex()
	d := &daemon{
		dir: dir, socket: filepath.Join(dir, "peapod.sock"), pidFile: filepath.Join(dir, "peapod.pid"),
		cgroupParent: "peapod-e2enode-" + suffix, bridge: "ppnode" + suffix,
	}
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil { // empty: the built-in network
		t.Fatal(err)
	}
	t.Cleanup(func() { d.destroy(t) })
	conf := fmt.Sprintf("unqualified-search-registries = [\"docker.io\"]\n[[registry]]\nlocation = %q\ninsecure = true\n", reg)
	for _, upstream := range []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io", "quay.io"} {
		conf += fmt.Sprintf("[[registry]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", upstream, reg)
	}
	files := map[string]string{
		"registries.conf": conf,
		// The second handler node e2e specs ask for (containerd's node
		// e2e configures runc and test-handler).
		"peapod.toml": testHandlerConfig(),
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(reportDir, "peapod.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The namespace is private: any pod range will do; the bridge and its
	// nftables table die with it.
	d.cmd = exec.Command(bin, "--config", filepath.Join(dir, "peapod.toml"), "--socket", d.socket,
		"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"),
		"--cgroup-parent", d.cgroupParent, "--registries-conf", filepath.Join(dir, "registries.conf"),
		"--bridge", d.bridge, "--pod-cidr", "10.88.0.0/16", "--cni-conf-dir", filepath.Join(dir, "cni"))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	if err := os.WriteFile(d.pidFile, []byte(strconv.Itoa(d.cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	rt, done := d.client(t)
	defer done()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := rt.Version(c, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			t.Logf("peapod %s on %s (cgroup parent %s)", v.RuntimeVersion, d.socket, d.cgroupParent)
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("peapod exited: see %s", logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("peapod did not answer Version in 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemon) client(t *testing.T) (runtimeapi.RuntimeServiceClient, func()) {
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return runtimeapi.NewRuntimeServiceClient(conn), func() { conn.Close() }
}

// destroy removes the pods the suite left, stops peapod, ends any keeper
// still alive, and removes its cgroups. Mounts, the bridge and nftables
// go with the namespaces.
func (d *daemon) destroy(t *testing.T) {
	var keepers []int
	select {
	case <-d.exited:
	default:
		rt, done := d.client(t)
		c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if resp, err := rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				if st, err := rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.Id, Verbose: true}); err == nil {
					var info struct{ Pid int }
					json.Unmarshal([]byte(st.Info["info"]), &info)
					keepers = append(keepers, info.Pid)
				}
				if _, err := rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
					t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
				}
			}
			if len(resp.Items) > 0 {
				t.Logf("cleanup: removed %d pods the suite left", len(resp.Items))
			}
		}
		cancel()
		done()
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			t.Errorf("peapod did not exit 20s after SIGTERM: killed")
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	for _, pid := range keepers {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); pid > 0 && strings.Contains(string(cmdline), "pod-pause") {
			t.Errorf("cleanup: pod keeper %d still running: killed", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, dir := range testenv.RemoveCgroup(d.cgroupParent) {
		t.Errorf("cleanup: cgroup %s left behind", dir)
	}
}

func randomHex() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy
// (cpuset seeded from the parent: a new v1 cpuset starts empty) and
// removes it, with whatever the kubelet left below it, at the end.
func makeCgroupRoot(t *testing.T) string {
	root := "/peapod-e2enode-" + randomHex()
	for _, h := range testenv.CgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("cgroup root: %v", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
		}
	}
	t.Cleanup(func() {
		for _, dir := range testenv.RemoveCgroup(root) {
			// The kubelet's QoS cgroups are its own and it never removes
			// them; a pod's cgroup below them would be a leak.
			if rel := dir[strings.Index(dir, root)+len(root):]; !kubeletQoSCgroups[rel] {
				t.Errorf("cleanup: cgroup %s left behind", dir)
			}
		}
	})
	return root
}

// kubeletQoSCgroups are the cgroups the kubelet makes below its cgroup
// root at start (cgroupfs driver) and leaves when it stops.
var kubeletQoSCgroups = map[string]bool{"/kubepods": true, "/kubepods/burstable": true, "/kubepods/besteffort": true}
