package integration

import (
	"github.com/peapod-cri/peapod/integration/testenv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// systemdLayout: with cgroup_driver = "systemd", a pod whose parent is a
// slice name, as kubelet's systemd driver sends it, gets the cgroups
// systemd would make for it (peapod manages them with cgroupfs): the pod a
// child slice, the pause and the containers scopes, with their limits.
func systemdLayout(t *testing.T, regAddr, image string) {
	// A root slice of the test's own, as kubelet's kubepods.slice; removed
	// after the daemon's cleanup has removed the pods (cleanups run last
	// first).
	top := "peapodit" + randomSuffix()
	slice := top + "-pod" + randomSuffix() + ".slice"
	sliceDir := "/" + top + ".slice/" + slice
	t.Cleanup(func() { testenv.RemoveCgroup("/" + top + ".slice") })
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
	podDir := sliceDir + "/" + strings.TrimSuffix(slice, ".slice") + "-peapod_pod_" + run.PodSandboxId + ".slice"
	expectAbsCgroup(t, podDir, map[string]string{"memory/memory.limit_in_bytes": strconv.Itoa(128 << 20), "cpu/cpu.cfs_quota_us": "50000"},
		map[string]string{"memory/memory.max": strconv.Itoa(128 << 20), "cpu/cpu.max": "50000 100000"})
	pause := pausePID(c, d, run.PodSandboxId)
	_, holder, _ := podProcs(t, d, run.PodSandboxId)
	got, want := strings.Fields(readAbsCgroup(t, "memory", podDir+"/peapod-pause.scope", "cgroup.procs")), []string{strconv.Itoa(pause), strconv.Itoa(holder)}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("peapod-pause.scope holds %q, want the pause and its holder %q", got, want)
	}

	cfg := containerConfig("sleeper", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512}}
	id := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
	scope := podDir + "/peapod-" + id + ".scope"
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

	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(absCgroupFile(t, "memory", podDir, "")); !os.IsNotExist(err) {
		t.Errorf("pod slice %s left after removal (%v)", podDir, err)
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
