package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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

// peapodBinary is built once by TestMain.
var peapodBinary string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests need root: skipped")
		os.Exit(0)
	}
	// A prebuilt binary (make test-cgroupv2 builds on the host and runs
	// the tests in a guest, where building is slow).
	if bin := os.Getenv("PEAPOD_BINARY"); bin != "" {
		peapodBinary = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "peapod-bin-")
	if err != nil {
		panic(err)
	}
	peapodBinary = filepath.Join(dir, "peapod")
	tags, err := os.ReadFile("../build-tags.txt")
	if err != nil {
		panic(err)
	}
	// peapod-runner beside it, as make build and make install put it:
	// the daemon starts containers with it (sandbox/runner).
	for _, cmd := range []string{"peapod", "peapod-runner"} {
		build := exec.Command("go", "build", "-tags", strings.TrimSpace(string(tags)), "-o", filepath.Join(dir, cmd), "../cmd/"+cmd)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Println("build "+cmd+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one peapod under test with its own socket, root, state, cgroup
// parent and log.
type daemon struct {
	t            *testing.T
	dir          string
	socket       string
	root, state  string
	cgroupParent string // relative: nested under the test's own cgroup
	regConf      string
	bridge       string // built-in pod network: own bridge and /24 per daemon
	podCIDR      string
	cniConfDir   string   // empty: the built-in network, whatever the host has in /etc/cni/net.d
	env          []string // added to the daemon's environment (e.g. PEAPOD_FAILPOINTS)
	args         []string // added to the daemon's flags (e.g. --config)
	cmd          *exec.Cmd
	logPath      string
	conn         *grpc.ClientConn
	rt           runtimeapi.RuntimeServiceClient
	img          runtimeapi.ImageServiceClient
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newDaemon prepares (but does not start) a daemon whose registries.conf
// sends registry.k8s.io and docker.io to the test registry at regAddr.
func newDaemon(t *testing.T, regAddr string) *daemon {
	dir, err := os.MkdirTemp("", "peapod-it-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		t:            t,
		dir:          dir,
		socket:       filepath.Join(dir, "peapod.sock"),
		root:         filepath.Join(dir, "root"),
		state:        filepath.Join(dir, "state"),
		cgroupParent: "peapod-it-" + randomSuffix(),
		regConf:      filepath.Join(dir, "registries.conf"),
		logPath:      filepath.Join(dir, "daemon.log"),
		bridge:       "ppt" + randomSuffix(),
		podCIDR:      freePodCIDR(t),
		cniConfDir:   filepath.Join(dir, "cni"),
	}
	if err := os.MkdirAll(d.cniConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	guardBridge(t, d.bridge)
	conf := fmt.Sprintf(`unqualified-search-registries = ["docker.io"]
[[registry]]
location = %[1]q
insecure = true
[[registry]]
location = "registry.k8s.io"
[[registry.mirror]]
location = %[1]q
insecure = true
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = %[1]q
insecure = true
`, regAddr)
	if err := os.WriteFile(d.regConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.destroy)
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	d.cmd = exec.Command(peapodBinary,
		"--socket", d.socket, "--root", d.root, "--state", d.state,
		"--cgroup-parent", d.cgroupParent, "--registries-conf", d.regConf, "--log-level", "debug",
		"--bridge", d.bridge, "--pod-cidr", d.podCIDR, "--cni-conf-dir", d.cniConfDir)
	d.cmd.Args = append(d.cmd.Args, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	logf.Close()
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.t.Fatal(err)
	}
	d.conn = conn
	d.rt = runtimeapi.NewRuntimeServiceClient(conn)
	d.img = runtimeapi.NewImageServiceClient(conn)
	waitFor(d.t, 20*time.Second, "daemon to answer Version", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := d.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err == nil
	})
}

// stop ends the daemon with SIGTERM, as an operator would.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		d.t.Errorf("peapod did not exit 15s after SIGTERM")
		d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// kill ends the daemon with SIGKILL, as a crash would.
func (d *daemon) kill() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// destroy removes every pod, stops the daemon and removes everything the
// test made, even after a failure. It then checks nothing was left behind.
func (d *daemon) destroy() {
	var pauses []int
	if d.cmd != nil && d.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if resp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				pauses = append(pauses, pausePID(ctx, d, p.Id))
				if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
					d.t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
				}
			}
		}
		cancel()
	}
	d.stop()
	if d.t.Failed() {
		if data, err := os.ReadFile(d.logPath); err == nil {
			d.t.Logf("peapod log:\n%s", tail(string(data), 60))
		}
	}
	for _, pid := range pauses {
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(st), "pod-pause") {
				d.t.Errorf("pause process %d left running", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if m := mountsUnder(d.dir); len(m) > 0 {
		d.t.Errorf("mounts left under %s: %v", d.dir, m)
		for i := len(m) - 1; i >= 0; i-- {
			syscall.Unmount(m[i], syscall.MNT_DETACH)
		}
	}
	if left := cgroupChildren(d.cgroupParent); len(left) > 0 {
		d.t.Errorf("cgroups left under %s: %v", d.cgroupParent, left)
	}
	testenv.RemoveCgroup(d.cgroupParent)
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		d.t.Errorf("veths left on %s: %s", d.bridge, out)
	}
	exec.Command("ip", "link", "del", d.bridge).Run()
	exec.Command("nft", "delete", "table", "ip", "peapod-"+d.bridge).Run()
	exec.Command("nft", "delete", "table", "ip6", "peapod-"+d.bridge).Run()
	os.RemoveAll(d.dir)
}

// pausePID reads the pod's pause PID from the verbose status.
func pausePID(ctx context.Context, d *daemon, pod string) int {
	resp, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		return 0
	}
	var info struct{ Pid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	return info.Pid
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mountsUnder(dir string) []string { return testenv.MountsUnder(dir) }

// cgroupChildren lists cgroups left below parent in any hierarchy.
func cgroupChildren(parent string) []string {
	var out []string
	for _, dir := range testenv.CgroupDirs(parent) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out
}

// timeoutScale stretches the tests' waits on a slow machine: the emulated
// cgroup v2 guest of make test-cgroupv2 sets PEAPOD_TEST_TIMEOUT_SCALE.
var timeoutScale = func() time.Duration {
	n, err := strconv.Atoi(os.Getenv("PEAPOD_TEST_TIMEOUT_SCALE"))
	if err != nil || n < 1 {
		return 1
	}
	return time.Duration(n)
}()

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout *= timeoutScale
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testImage pushes the busybox test image to a fresh registry and returns
// the registry address and the name pods use (resolved through the mirror).
func testImage(t *testing.T) (regAddr, ref string) {
	regAddr = testenv.StartRegistry(t)
	testenv.PushImage(t, regAddr, "e2e-test-images/busybox:it", testenv.BusyboxRootfs(t), testenv.ImageConfig{
		Cmd: []string{"sh"},
	})
	return regAddr, "registry.k8s.io/e2e-test-images/busybox:it"
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutScale)
	t.Cleanup(cancel)
	return c
}

func podConfig(name, logDir string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "it", Uid: name + "-uid"},
		Hostname:     name + "-host",
		LogDirectory: logDir,
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"it.svc"}},
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{"note": "integration"},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
}

func containerConfig(name, image string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"container": name},
	}
}

// freePodCIDR picks a 10.199.X.0/24 with X from 128 (network's own tests
// use the lower half).
func freePodCIDR(t *testing.T) string { return testenv.FreePodCIDR(t, "10.199", 128, 127) }

func guardBridge(t *testing.T, bridge string) { testenv.GuardBridge(t, bridge) }

// readyDaemon starts a daemon with the test image pulled, and returns the
// image's name.
func readyDaemon(t *testing.T) (*daemon, string) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.start()
	if _, err := d.img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	return d, image
}

// runPod runs a pod sandbox from cfg.
func runPod(t *testing.T, d *daemon, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.RunPodSandboxResponse {
	t.Helper()
	run, err := d.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("run pod %s: %v", cfg.GetMetadata().GetName(), err)
	}
	return run
}

// startContainer creates and starts a container in a pod.
func startContainer(t *testing.T, d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	c := ctx(t)
	cr, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	return cr.ContainerId
}
