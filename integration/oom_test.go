package integration

import (
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestOOMKilled: a container killed by the OOM killer within milliseconds
// of its start is reported OOMKilled with exit code 137.
func TestOOMKilled(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("oom", t.TempDir())
	run := runPod(t, d, podCfg)
	cfg := containerConfig("hog", image, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}}
	cr, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	var s *runtimeapi.ContainerStatus
	waitFor(t, 20*time.Second, "the container to exit", func() bool {
		s = containerStatus(t, d, cr.ContainerId)
		return s.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s.ExitCode != 137 || s.Reason != "OOMKilled" {
		t.Errorf("exit %d reason %q, want 137 OOMKilled", s.ExitCode, s.Reason)
	}
}

// TestOOMKilledChild: when the OOM killer kills a process other than the
// container's init and the init goes on to exit 0, the container is still
// reported OOMKilled, with the init's own exit code: the cgroup saw an OOM
// kill, which is what containerd (its TaskOOM event) and CRI-O (conmon's
// oom_kill watch) report.
func TestOOMKilledChild(t *testing.T) {
	d, image := readyDaemon(t)
	podCfg := podConfig("oomchild", t.TempDir())
	run := runPod(t, d, podCfg)
	cfg := containerConfig("parent", image, "sh", "-c", "head -c 100m /dev/zero | tail; exit 0")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
	id := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
	var s *runtimeapi.ContainerStatus
	waitFor(t, 30*time.Second, "the container to exit", func() bool {
		s = containerStatus(t, d, id)
		return s.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s.ExitCode != 0 || s.Reason != "OOMKilled" {
		t.Errorf("exit %d reason %q, want 0 OOMKilled", s.ExitCode, s.Reason)
	}
}
