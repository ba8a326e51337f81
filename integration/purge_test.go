package integration

import (
	"github.com/peapod-cri/peapod/integration/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPurge: `peapod purge` removes everything peapod made for a config,
// and nothing else. It refuses while the daemon runs (even with --force)
// and while pods run unless --force; then it removes the pods (their pause
// processes end), the built-in bridge and nftables table, root, state, the
// socket, the cgroup parent, and crictl's config only when that points at
// peapod's socket. Everything is the test's own: flags name it.
func TestPurge(t *testing.T) {
	d := newDaemon(t, "127.0.0.1:1")
	d.Start()
	cfg := podConfig("purge-a", filepath.Join(d.Dir, "logs"))
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 31878}}
	pod := runPod(t, d, cfg).PodSandboxId
	pause := pausePID(ctx(t), d, pod)
	if pause == 0 {
		t.Fatal("no pause PID")
	}
	ours := filepath.Join(d.Dir, "crictl.yaml")
	other := filepath.Join(d.Dir, "crictl-other.yaml")
	writeFile(t, ours, "runtime-endpoint: unix://"+d.Socket+"\nimage-endpoint: unix://"+d.Socket+"\n")
	writeFile(t, other, "runtime-endpoint: unix:///run/containerd/containerd.sock\n")
	purge := func(extra ...string) (string, error) {
		args := append([]string{"purge", "--socket", d.Socket, "--root", d.Root, "--state", d.State,
			"--cgroup-parent", d.CgroupParent, "--bridge", d.Bridge, "--pod-cidr", d.PodCIDR,
			"--cni-conf-dir", d.CNIConfDir, "--registries-conf", d.RegistriesConf}, extra...)
		out, err := exec.Command(peapodBinary, args...).CombinedOutput()
		return string(out), err
	}
	untouched := func(when string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(d.Root, "metadata.db")); err != nil {
			t.Fatalf("%s: root touched: %v", when, err)
		}
		if !linkExists(d.Bridge) || syscall.Kill(pause, 0) != nil {
			t.Fatalf("%s: bridge or pod gone", when)
		}
		if _, err := os.Stat(ours); err != nil {
			t.Fatalf("%s: crictl config removed", when)
		}
	}

	if out, err := purge("--force", "--crictl-config", ours); err == nil || !strings.Contains(out, "peapod is running") {
		t.Fatalf("purge while the daemon runs: %v: %s", err, out)
	}
	untouched("purge while the daemon runs")
	d.Stop() // pods keep running
	if out, err := purge("--crictl-config", ours); err == nil || !strings.Contains(out, "1 pods are running: it/purge-a") {
		t.Fatalf("purge with a running pod, no --force: %v: %s", err, out)
	}
	untouched("purge without --force")

	out, err := purge("--force", "--crictl-config", ours)
	if err != nil {
		t.Fatalf("purge --force: %v: %s", err, out)
	}
	t.Logf("purge --force:\n%s", out)
	if syscall.Kill(pause, 0) == nil {
		if st, _ := os.ReadFile("/proc/" + itoa(pause) + "/cmdline"); strings.Contains(string(st), "pod-pause") {
			t.Errorf("pause %d of the pod still runs", pause)
		}
	}
	for _, p := range []string{d.Root, d.State, d.Socket, ours} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left (err %v)", p, err)
		}
	}
	if linkExists(d.Bridge) {
		t.Errorf("bridge %s left", d.Bridge)
	}
	for _, family := range []string{"ip", "bridge"} {
		if exec.Command("nft", "list", "table", family, "peapod-"+d.Bridge).Run() == nil {
			t.Errorf("nft table %s peapod-%s left", family, d.Bridge)
		}
	}
	for _, dir := range testenv.CgroupDirs(d.CgroupParent) {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left (err %v)", dir, err)
		}
	}
	if m := mountsUnder(d.Dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}

	// Again, with a crictl config that is not peapod's: it stays.
	out, err = purge("--crictl-config", other)
	if err != nil || !strings.Contains(out, "kept "+other) {
		t.Fatalf("second purge: %v: %s", err, out)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("crictl config of another runtime removed: %v", err)
	}
}

// TestPurgeRefusesForeignRoot: a config whose root is a directory that is
// not peapod's is refused before anything is opened or removed.
func TestPurgeRefusesForeignRoot(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "data")
	writeFile(t, filepath.Join(dir, "keep"), "x")
	os.MkdirAll(foreign, 0o755)
	writeFile(t, filepath.Join(foreign, "precious"), "x")
	out, err := exec.Command(peapodBinary, "purge", "--socket", filepath.Join(dir, "s.sock"), "--root", foreign,
		"--state", filepath.Join(dir, "state"), "--cgroup-parent", "peapod-it-"+randomSuffix(), "--bridge", "ppt"+randomSuffix(),
		"--crictl-config", filepath.Join(dir, "crictl.yaml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not look like peapod's") {
		t.Fatalf("purge of a foreign root: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Fatalf("foreign root touched: %v", err)
	}
}
