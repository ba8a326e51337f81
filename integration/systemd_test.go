package integration

import (
	"fmt"
	"github.com/peapod-cri/peapod/integration/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSystemdDriver is the systemd driver under a running systemd (the
// guest of make test-cgroupv2 boots one as PID 1): the pod slice and the
// scopes are transient units made through D-Bus, their limits unit
// properties, and RemovePodSandbox stops them. Without systemd it skips,
// unless PEAPOD_REQUIRE_SYSTEMD is set (the guest sets it, so that a
// systemd that did not come up fails the run instead of passing it).
func TestSystemdDriver(t *testing.T) {
	if !systemdRunning() {
		if os.Getenv("PEAPOD_REQUIRE_SYSTEMD") != "" {
			t.Fatal("PEAPOD_REQUIRE_SYSTEMD is set but systemd is not running here (no /run/systemd/system, or systemctl does not answer)")
		}
		t.Skip("needs a running systemd (TestResources covers the emulated layout)")
	}
	regAddr, image := testImage(t)
	systemdLayout(t, regAddr, image)
}

// systemdRunning reports whether systemd is PID 1 here and answers.
func systemdRunning() bool {
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return false
	}
	return exec.Command("systemctl", "show", "-p", "Version", "--value").Run() == nil
}

// unitProps reads properties of a systemd unit through systemctl (D-Bus).
func unitProps(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out, err := exec.Command("systemctl", "show", "-p", strings.Join(props, ","), unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

func expectUnit(t *testing.T, unit string, want map[string]string) {
	t.Helper()
	var props []string
	for k := range want {
		props = append(props, k)
	}
	got := unitProps(t, unit, props...)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("unit %s: %s=%q, want %q", unit, k, got[k], v)
		}
	}
}

// systemdLayout: with cgroup_driver = "systemd", a pod whose parent is a
// slice name, as kubelet's systemd driver sends it, gets the cgroups
// systemd would make for it: the pod a child slice, the pause and the
// containers scopes, with their limits. Under a running systemd they are
// its transient units (cri-peapod-<id>.scope); without one peapod makes
// the same tree with cgroupfs (peapod-pause.scope, peapod-<id>.scope).
func systemdLayout(t *testing.T, regAddr, image string) {
	live := systemdRunning()
	// A root slice of the test's own, as kubelet's kubepods.slice; removed
	// after the daemon's cleanup has removed the pods (cleanups run last
	// first).
	top := "peapodit" + randomSuffix()
	slice := top + "-pod" + randomSuffix() + ".slice"
	sliceDir := "/" + top + ".slice/" + slice
	t.Cleanup(func() {
		if live {
			exec.Command("systemctl", "stop", top+".slice").Run()
		}
		testenv.RemoveCgroup("/" + top + ".slice")
	})
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte("cgroup_driver = \"systemd\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	rc, err := d.RT.RuntimeConfig(c, &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rc.GetLinux().GetCgroupDriver(); got != runtimeapi.CgroupDriver_SYSTEMD {
		t.Errorf("RuntimeConfig cgroup driver %v, want SYSTEMD", got)
	}

	podCfg := podConfig("sd", t.TempDir())
	podCfg.Linux.CgroupParent = slice
	podCfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuQuota: 50000, CpuPeriod: 100000}
	// A shared PID namespace: the scope holds the PID holder too.
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	run := runPod(t, d, podCfg)
	podUnit := strings.TrimSuffix(slice, ".slice") + "-peapod_pod_" + run.PodSandboxId + ".slice"
	podDir := sliceDir + "/" + podUnit
	expectAbsCgroup(t, podDir, map[string]string{"memory/memory.limit_in_bytes": strconv.Itoa(128 << 20), "cpu/cpu.cfs_quota_us": "50000"},
		map[string]string{"memory/memory.max": strconv.Itoa(128 << 20), "cpu/cpu.max": "50000 100000"})
	pauseUnit := "peapod-pause.scope"
	if live {
		pauseUnit = "cri-peapod-" + run.PodSandboxId + ".scope"
		// The limits are the slice's unit properties, not only files.
		expectUnit(t, podUnit, map[string]string{"ActiveState": "active", "ControlGroup": podDir,
			"MemoryMax": strconv.Itoa(128 << 20), "CPUQuotaPerSecUSec": "500ms"})
		expectUnit(t, pauseUnit, map[string]string{"ActiveState": "active", "Slice": podUnit, "ControlGroup": podDir + "/" + pauseUnit})
		// On the system bus too (dbus-daemon), where the kubelet and
		// operators look.
		if out, err := exec.Command("busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			"org.freedesktop.systemd1.Manager", "GetUnit", "s", pauseUnit).CombinedOutput(); err != nil {
			t.Errorf("busctl GetUnit %s: %v: %s", pauseUnit, err, out)
		}
	}
	pause := pausePID(c, d, run.PodSandboxId)
	_, holder, _ := podProcs(t, d, run.PodSandboxId)
	got, want := strings.Fields(readAbsCgroup(t, "memory", podDir+"/"+pauseUnit, "cgroup.procs")), []string{strconv.Itoa(pause), strconv.Itoa(holder)}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %q, want the pause and its holder %q", pauseUnit, got, want)
	}

	cfg := containerConfig("sleeper", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512}}
	id := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
	ctrUnit := "peapod-" + id + ".scope"
	if live {
		ctrUnit = "cri-peapod-" + id + ".scope"
		expectUnit(t, ctrUnit, map[string]string{"ActiveState": "active", "Slice": podUnit, "MemoryMax": strconv.Itoa(64 << 20)})
	}
	scope := podDir + "/" + ctrUnit
	expectAbsCgroup(t, scope, map[string]string{"memory/memory.limit_in_bytes": strconv.Itoa(64 << 20), "cpu/cpu.shares": "512"},
		map[string]string{"memory/memory.max": strconv.Itoa(64 << 20), "cpu/cpu.weight": "59"})
	if procs := readAbsCgroup(t, "memory", scope, "cgroup.procs"); procs == "" {
		t.Errorf("container scope %s holds no process", scope)
	}
	if _, err := d.RT.UpdateContainerResources(c, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	expectAbsCgroup(t, scope, map[string]string{"memory/memory.limit_in_bytes": strconv.Itoa(96 << 20)},
		map[string]string{"memory/memory.max": strconv.Itoa(96 << 20)})
	if live {
		expectUnit(t, ctrUnit, map[string]string{"MemoryMax": strconv.Itoa(96 << 20)})
	}

	// OOM kills are reported in the slice too; under systemd the scope's
	// cgroup is gone by the time the exit is seen (systemd removes an empty
	// scope), so peapod asks systemd for the unit's result.
	for i, cmd := range [][]string{{"tail", "/dev/zero"}, {"sh", "-c", "head -c 100m /dev/zero | tail"}} {
		hog := containerConfig(fmt.Sprintf("hog%d", i), image, cmd...)
		hog.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
		hid := startContainer(t, d, run.PodSandboxId, podCfg, hog)
		deadline := time.Now().Add(30 * time.Second * timeoutScale)
		for {
			r, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: hid})
			if err != nil {
				t.Fatal(err)
			}
			if s := r.Status; s.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				if s.ExitCode != 137 || s.Reason != "OOMKilled" {
					t.Errorf("%v under a slice: exit %d reason %q, want 137 OOMKilled", cmd, s.ExitCode, s.Reason)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v under a slice: not exited after 30s", cmd)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: hid}); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(absCgroupFile(t, "memory", podDir, "")); !os.IsNotExist(err) {
		t.Errorf("pod slice %s left after removal (%v)", podDir, err)
	}
	if live {
		for _, u := range []string{podUnit, pauseUnit, ctrUnit} {
			if st := unitProps(t, u, "ActiveState")["ActiveState"]; st != "inactive" {
				t.Errorf("unit %s is %q after RemovePodSandbox, want inactive (stopped)", u, st)
			}
		}
	}

}

// refuseSlice: the cgroupfs driver refuses a slice parent: kubelet and
// peapod must agree on the driver.
func refuseSlice(t *testing.T, d *daemon, image string) {
	cfg := podConfig("sd2", t.TempDir())
	cfg.Linux.CgroupParent = "peapodit-pod" + randomSuffix() + ".slice"
	if _, err := d.RT.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg}); err == nil {
		t.Error("cgroupfs driver accepted a slice parent")
	}
}

// absCgroupFile is file in the cgroup at the absolute path abs (from the
// root of the hierarchy) of controller ctrl on v1, or in the unified one.
func absCgroupFile(t *testing.T, ctrl, abs, file string) string {
	if cgroupV2() {
		return filepath.Join("/sys/fs/cgroup", abs, file)
	}
	return filepath.Join("/sys/fs/cgroup", ctrl, abs, file)
}

func readAbsCgroup(t *testing.T, ctrl, abs, file string) string {
	t.Helper()
	data, err := os.ReadFile(absCgroupFile(t, ctrl, abs, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func expectAbsCgroup(t *testing.T, abs string, v1, v2 map[string]string) {
	t.Helper()
	expectCgroupFiles(t, abs, func(ctrl, file string) string { return readAbsCgroup(t, ctrl, abs, file) }, v1, v2)
}
