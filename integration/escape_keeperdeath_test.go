package integration

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeKeeperDeathLeavesNothing: a pod's keeper is the parent of its
// containers' inits and the one that reports their exits. When it dies
// (SIGKILL from the host, the node's OOM killer), the daemon records its
// containers as exited (255, Unknown) and StopContainer then does
// nothing. In a hostPID pod nothing else ends them: the inits and their
// children ran on, reported exited, until StopPodSandbox removed the
// pod's cgroups; after a daemon restart likewise. What is reported exited
// must have exited: every process of the container's cgroup must be gone
// without any further CRI call. The own-PID and shared-PID pods (their
// PID namespace dies with the keeper) are the control.
func TestEscapeKeeperDeathLeavesNothing(t *testing.T) {
	d, image := readyDaemon(t)
	for _, shape := range []struct {
		name    string
		pid     runtimeapi.NamespaceMode
		restart bool
	}{
		{"own-pid", runtimeapi.NamespaceMode_CONTAINER, false},
		{"shared-pid", runtimeapi.NamespaceMode_POD, false},
		{"host-pid", runtimeapi.NamespaceMode_NODE, false},
		{"host-pid-restart", runtimeapi.NamespaceMode_NODE, true},
	} {
		t.Run(shape.name, func(t *testing.T) {
			logDir := t.TempDir()
			podCfg := podConfig("keeperdeath-"+shape.name, logDir)
			ns := &runtimeapi.NamespaceOption{Pid: shape.pid}
			podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}
			pod := runPod(t, d, podCfg).PodSandboxId
			keeper, _, _ := podProcs(t, d, pod)
			marker := "keeperdeath-" + randomSuffix()
			cfg := containerConfig("c", image, "sh", "-c",
				`trap '' TERM; (trap '' TERM; while :; do sleep 1; done) & echo UP; while :; do sleep 1; done`, marker)
			cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}}
			id := startContainer(t, d, pod, podCfg, cfg)
			waitFor(t, 30*time.Second, "the container to run", func() bool { return logHas(filepath.Join(logDir, "c.log"), "UP") })
			if n := len(fightProcesses(id, "")); n < 3 {
				t.Fatalf("the container runs %d processes", n)
			}

			if shape.restart {
				d.Stop()
			}
			if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if shape.restart {
				time.Sleep(time.Second)
				d.Start()
			}
			waitFor(t, 30*time.Second, "the container reported exited", func() bool {
				st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
				return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
			})
			deadline := time.Now().Add(15 * time.Second * timeoutScale)
			for len(fightProcesses(id, "")) > 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if left := fightProcesses(id, ""); len(left) > 0 {
				t.Errorf("%d processes of a container reported exited still run 15 s after its keeper died: %v", len(left), left)
			}
			if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatal(err)
			}
			if left := fightProcesses("", marker); len(left) > 0 {
				t.Errorf("processes left after the pod's removal: %v", left)
			}
			waitFor(t, 20*time.Second, "the pod's cgroups to be removed", func() bool {
				return len(cgroupChildren(filepath.Join(d.CgroupParent, "peapod-pod-"+pod))) == 0
			})
		})
	}
}
