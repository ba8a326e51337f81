package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// peapodBinary is built once by TestMain (testenv.BuildPeapod: its
// helpers embedded, as make build makes it).
var peapodBinary string

var separate struct {
	once sync.Once
	dir  string
	err  error
}

// separateBinaries is a directory holding peapod built without embedded
// helpers and peapod-runner and peapod-pause beside it (the layout before
// embedding), built on first use beside peapodBinary.
func separateBinaries(t *testing.T) string {
	t.Helper()
	separate.once.Do(func() {
		separate.dir = filepath.Join(filepath.Dir(peapodBinary), "separate")
		if separate.err = os.MkdirAll(separate.dir, 0o755); separate.err == nil {
			separate.err = testenv.BuildPeapodSeparate("..", separate.dir)
		}
	})
	if separate.err != nil {
		t.Fatalf("build the separate binaries: %v", separate.err)
	}
	return separate.dir
}

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
	if err := testenv.BuildPeapod("..", dir); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one peapod under test (testenv.Daemon) with its own socket,
// root, state, relative cgroup parent, bridge, pod range and log.
type daemon struct{ *testenv.Daemon }

// newDaemon prepares (but does not start) a daemon whose registries.conf
// sends registry.k8s.io and docker.io to the test registry at regAddr.
func newDaemon(t *testing.T, regAddr string) *daemon {
	return &daemon{testenv.NewDaemon(t, daemonOptions(t, regAddr))}
}

func daemonOptions(t *testing.T, regAddr string) testenv.DaemonOptions {
	return testenv.DaemonOptions{
		Binary:       peapodBinary,
		Name:         "peapod-it",
		BridgePrefix: "ppt",
		PodCIDR:      freePodCIDR(t),
		Registries:   testenv.MirrorRegistries(regAddr, "registry.k8s.io", "docker.io"),
		LogLevel:     "debug",
		ReadyTimeout: 20 * time.Second * timeoutScale,
	}
}

// newNodeDaemon is newDaemon configured as the node the environment names
// (testenv.WithNodeEnv: the systemd driver, the CNI network), for the
// suites make test-cgroupv2-full runs in the guest.
func newNodeDaemon(t *testing.T, regAddr string) *daemon {
	return &daemon{testenv.NewDaemon(t, daemonOptions(t, regAddr).WithNodeEnv())}
}

// pausePID reads the pod's pause PID from the verbose status.
func pausePID(ctx context.Context, d *daemon, pod string) int { return d.KeeperPID(ctx, pod) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mountsUnder(dir string) []string { return testenv.MountsUnder(dir) }

// cgroupChildren lists cgroups left below parent in any hierarchy.
func cgroupChildren(parent string) []string { return testenv.CgroupChildren(parent) }

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

// readyDaemon starts a daemon with the test image pulled, and returns the
// image's name.
func readyDaemon(t *testing.T) (*daemon, string) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	return d, image
}

// runPod runs a pod sandbox from cfg.
func runPod(t *testing.T, d *daemon, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.RunPodSandboxResponse {
	t.Helper()
	run, err := d.RT.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("run pod %s: %v", cfg.GetMetadata().GetName(), err)
	}
	return run
}

// startContainer creates and starts a container in a pod.
func startContainer(t *testing.T, d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	c := ctx(t)
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	return cr.ContainerId
}

func randomSuffix() string { return testenv.RandomSuffix() }

func guardBridge(t *testing.T, bridge string) { testenv.GuardBridge(t, bridge) }
