// Package critest runs the Kubernetes CRI validation suite (critest from
// sigs.k8s.io/cri-tools) against a private peapod, offline. The images
// critest pulls are built here from Debian packages (images_test.go) and
// served by a local registry; peapod's registries.conf mirrors
// registry.k8s.io, gcr.io, k8s.gcr.io, public.ecr.aws and docker.io to it.
//
// `make critest` builds critest and the ginkgo CLI (tools/critest) and runs
// TestCritest with CRITEST_TOOLS naming their directory. Without it the test
// skips: it is a conformance run of its own, not part of `go test ./...`.
package critest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// offlineFailure is the one spec that cannot pass without the internet:
// it pulls gcr.io/k8s-staging-cri-tools/test-image-digest by a fixed
// upstream digest, which no image built here can have.
const offlineFailure = "public image with digest should be pulled and removed"

// expectedSkips are the specs critest v1.37.0 skips here, by the prefix of
// their name, and why. Any other skip fails the run, as a failure does: a
// spec that skips itself usually found something missing.
var expectedSkips = []struct{ prefix, why string }{
	// Only where the kernel has no AppArmor (appArmorEnabled): where it
	// has, the 9 specs must run and pass.
	{appArmorPrefix, "no AppArmor in this kernel"},
}

// The suite's size and the passes it must at least have on this host (v1
// cgroups, no AppArmor): 137 specs counted (the benchmarks are filtered
// out), 127 passed (the 4 Image Volume specs and the 13 NRI specs among
// them), 1 failed (the digest pull), 9 skipped (AppArmor). Checked so that
// a run where specs silently vanish or stop passing cannot look green.
const (
	suiteSpecs = 137
	minPassed  = 127
	// With AppArmor in the kernel (the qemu guest of make
	// test-cgroupv2-full) its specs run too.
	appArmorSpecs  = 9
	appArmorPrefix = "[k8s.io] AppArmor "
)

// appArmorEnabled reads the kernel's switch, as critest does.
func appArmorEnabled() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.HasPrefix(string(b), "Y")
}

// A focused run (CRITEST_FOCUS, a ginkgo focus regexp, e.g. "AppArmor" in
// the slow qemu guest) replaces the whole-suite counts with
// CRITEST_MIN_PASSED: at least that many specs passed, none skipped.
func focus(t *testing.T) (re string, minPass int) {
	re = os.Getenv("CRITEST_FOCUS")
	if re == "" {
		return "", 0
	}
	if _, err := fmt.Sscan(os.Getenv("CRITEST_MIN_PASSED"), &minPass); err != nil || minPass < 1 {
		t.Fatalf("CRITEST_FOCUS=%q needs CRITEST_MIN_PASSED, the specs it must pass", re)
	}
	return re, minPass
}

// The suite's own limit, and ours around it: both stay well inside
// `go test -timeout` (60m in the Makefile), so cleanup always runs. The
// emulated guest of make test-cgroupv2-full needs longer (about 45 min
// there): CRITEST_SUITE_TIMEOUT (a Go duration) sets it, and the caller's
// -test.timeout.
var suiteTimeout = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CRITEST_SUITE_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return 30 * time.Minute
}()

var runTimeout = suiteTimeout + 5*time.Minute

func TestCritest(t *testing.T) {
	tools := os.Getenv("CRITEST_TOOLS")
	if tools == "" {
		t.Skip("run by `make critest`: needs CRITEST_TOOLS (critest and ginkgo built from tools/critest)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	peapodBin := os.Getenv("PEAPOD_BIN")
	if peapodBin == "" {
		peapodBin = "../../bin/peapod"
	}
	// Ctrl-C or SIGTERM ends critest, then the cleanups below still run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	focused, focusMin := focus(t)
	reportDir := os.Getenv("CRITEST_REPORT_DIR")
	if reportDir == "" {
		reportDir = t.TempDir()
	}
	if err := os.MkdirAll(reportDir, 0o755); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	reg := testenv.StartRegistry(t)
	pushCritestImages(t, reg)
	t.Logf("registry %s with critest's images in %s", reg, time.Since(t0).Round(time.Millisecond))

	d := startPeapod(t, peapodBin, reg, reportDir)
	if ctx.Err() != nil {
		t.Fatal("interrupted")
	}

	shmBefore := shmSegments()
	t.Cleanup(func() { removeNewShm(t, shmBefore) })

	t1 := time.Now()
	rc := runCritest(ctx, t, tools, d.Socket, d.NRISocket, reportDir, focused)
	t.Logf("critest ran in %s (exit status %d); report in %s", time.Since(t1).Round(time.Second), rc, reportDir)
	if ctx.Err() != nil {
		t.Fatal("interrupted")
	}

	res, err := testenv.ReadGinkgoReport(filepath.Join(reportDir, "report.json"), 300)
	if err != nil {
		t.Fatalf("critest report: %v (see %s)", err, filepath.Join(reportDir, "critest.log"))
	}
	unexpected := 0
	for _, s := range res.Failed {
		if strings.Contains(s.Name, offlineFailure) {
			fmt.Printf("expected failure (offline: fixed upstream digest): %s\n", s.Name)
			continue
		}
		unexpected++
		fmt.Printf("FAIL: %s\n    %s\n", s.Name, s.Message)
	}
	unexpectedSkips := 0
	aa := appArmorEnabled()
	for _, s := range res.Skipped {
		why := ""
		for _, e := range expectedSkips {
			if e.prefix == appArmorPrefix && aa {
				continue
			}
			if strings.HasPrefix(s.Name, e.prefix) {
				why = e.why
				break
			}
		}
		if why == "" {
			unexpectedSkips++
			fmt.Printf("UNEXPECTED SKIP: %s\n    %s\n", s.Name, s.Message)
			continue
		}
		fmt.Printf("expected skip (%s): %s\n", why, s.Name)
	}
	fmt.Printf("critest: %d passed, %d failed, %d skipped\n", len(res.Passed), len(res.Failed), len(res.Skipped))
	if unexpected > 0 {
		t.Errorf("%d critest specs failed besides the offline digest pull (log: %s)", unexpected, filepath.Join(reportDir, "critest.log"))
	}
	if unexpectedSkips > 0 {
		t.Errorf("%d critest specs skipped for a reason not in expectedSkips (log: %s)", unexpectedSkips, filepath.Join(reportDir, "critest.log"))
	}
	want := minPassed
	if aa {
		want += appArmorSpecs
	}
	if focused != "" {
		want = focusMin
	} else if n := len(res.Passed) + len(res.Failed) + len(res.Skipped); n != suiteSpecs {
		t.Errorf("critest counted %d specs, want %d (critest v1.37.0)", n, suiteSpecs)
	}
	if len(res.Passed) < want {
		t.Errorf("critest: %d passed, want at least %d (AppArmor in the kernel: %v, focus %q)", len(res.Passed), want, aa, focused)
	}
	if rc != 0 && len(res.Failed) == 0 {
		t.Errorf("critest exited %d with no failed spec; see %s", rc, filepath.Join(reportDir, "critest.log"))
	}
}

// runCritest runs the validation suite (parallel 2) and returns critest's
// exit status. critest re-runs itself under the ginkgo CLI from PATH.
func runCritest(ctx context.Context, t *testing.T, tools, socket, nriSocket, reportDir, focus string) int {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	logf, err := os.Create(filepath.Join(reportDir, "critest.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ep := "unix://" + socket
	cmd := exec.CommandContext(ctx, filepath.Join(tools, "critest"),
		"--runtime-endpoint", ep, "--image-endpoint", ep, "--parallel", "2",
		"--ginkgo.no-color", "--ginkgo.timeout", suiteTimeout.String(),
		"--ginkgo.json-report", filepath.Join(reportDir, "report.json"),
		// The NRI specs connect their plugins to the daemon's own socket.
		"--nri-socket", nriSocket)
	if focus != "" {
		cmd.Args = append(cmd.Args, "--ginkgo.focus", focus)
	}
	cmd.Dir = reportDir // critest reads crictl.yaml from its working directory
	cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// ginkgo and its parallel workers are stopped together, gently first.
	rc, err := testenv.RunSuite(cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("critest: %v", err)
	}
	return rc
}

// ---------------------------------------------------------------- peapod

// startPeapod starts the peapod under test (testenv.NewDaemon): own
// socket, root, state, relative cgroup parent, bridge and pod range, its
// log in reportDir, and a registries.conf that mirrors every registry
// critest pulls from to reg.
func startPeapod(t *testing.T, bin, reg, reportDir string) *testenv.Daemon {
	d := testenv.NewDaemon(t, testenv.DaemonOptions{
		Binary:       bin,
		Name:         "peapod-critest",
		BridgePrefix: "ppcri",
		PodCIDR:      testenv.FreePodCIDR(t, "10.197", 1, 250),
		Registries:   testenv.MirrorRegistries(reg, "registry.k8s.io", "gcr.io", "k8s.gcr.io", "public.ecr.aws", "docker.io"),
		LogPath:      filepath.Join(reportDir, "peapod.log"),
		// User-namespaced containers reach their files below the state
		// dir as a mapped user: peapod offers user namespaces only when
		// every dir on the way is searchable by others.
		DirMode: 0o711,
		// Stretched in the emulated guest: there, under a busy host, the
		// daemon once took over 30 s to answer (its log still empty).
		ReadyTimeout: 30 * time.Second * testenv.TimeoutScale(),
		// critest's NRI plugin-synchronization specs hold a plugin's
		// Synchronize open for 2 s on purpose; NRI's default request
		// timeout (2 s, as containerd's and CRI-O's) would disconnect
		// the plugin and the specs skip as "containers lost".
		Config: "nri_plugin_request_timeout = \"10s\"\n",
	}.WithNodeEnv())
	os.Remove(d.LogPath) // the report dir may hold the last run's
	t0 := time.Now()
	d.Start()
	t.Logf("peapod answered in %s", time.Since(t0).Round(time.Millisecond))
	v, err := d.RT.Version(context.Background(), &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peapod %s on %s (bridge %s, pods %s, cgroup parent %s, cgroup driver %s, CNI plugins %q)", v.RuntimeVersion, d.Socket, d.Bridge, d.PodCIDR, d.CgroupParent,
		testenv.NodeCgroupDriver(), testenv.NodeCNIBin())
	return d
}

// ---------------------------------------------------------------- SysV shm

// critest's HostIpc specs create 1 MiB SysV shared memory segments in the
// host's IPC namespace (ipcmk -M 1048576) and never remove them.
func shmSegments() map[int]bool {
	ids := map[int]bool{}
	data, _ := os.ReadFile("/proc/sysvipc/shm")
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		var id, size, nattch int
		if len(f) > 6 && sscan(f[1], &id) && sscan(f[3], &size) && sscan(f[6], &nattch) && size == 1<<20 && nattch == 0 {
			ids[id] = true
		}
	}
	return ids
}

func removeNewShm(t *testing.T, before map[int]bool) {
	for id := range shmSegments() {
		if !before[id] {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
				t.Logf("remove SysV shm %d: %v", id, err)
			}
		}
	}
}

func sscan(s string, v *int) bool {
	_, err := fmt.Sscan(s, v)
	return err == nil
}
