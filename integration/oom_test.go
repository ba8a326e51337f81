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
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
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
