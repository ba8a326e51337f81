package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestExitedContainerUnmounted: an exited container's root filesystem is
// unmounted once its exit is recorded (sandbox/run.go releaseRootfs), as
// containerd and CRI-O unmount theirs; the kubelet keeps exited containers
// for long, and every mount left is a line of the mount table each later
// container start reads. Its status and removal still work. A container
// that exits while the daemon is down is unmounted by the restarted
// daemon; a running one stays mounted throughout.
func TestExitedContainerUnmounted(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("release", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	start := func(name string, cmd ...string) string {
		return startContainer(t, d, pod, podCfg, containerConfig(name, image, cmd...))
	}
	// The containers' overlay mounts (c/storage's ".../merged").
	rootfsMounts := func() int {
		n := 0
		for _, m := range mountsUnder(d.Root) {
			if strings.HasSuffix(m, "/merged") {
				n++
			}
		}
		return n
	}
	runs := start("runs", "sleep", "1000")
	dies := start("dies-while-down", "sleep", "1000")
	if n := rootfsMounts(); n != 2 {
		t.Fatalf("%d root filesystems mounted with two containers running, want 2", n)
	}
	exits := start("exits", "true")
	waitFor(t, 10*time.Second, "container exits exited", func() bool {
		return containerStatus(t, d, exits).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	waitFor(t, 5*time.Second, "the exited container's root filesystem unmounted", func() bool { return rootfsMounts() == 2 })
	if st := containerStatus(t, d, exits); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("exited container: code %d reason %q, want 0 Completed", st.ExitCode, st.Reason)
	}

	diesPID := containerPID(t, d, dies)
	d.Kill() // a crash: the exit happens while no daemon watches
	if err := syscall.Kill(diesPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the container's process while the daemon is down: %v", err)
	}
	d.Start()
	c = ctx(t)
	waitFor(t, 10*time.Second, "container dies-while-down exited after the restart", func() bool {
		return containerStatus(t, d, dies).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	waitFor(t, 10*time.Second, "the root filesystem of the container that exited while the daemon was down unmounted", func() bool {
		return rootfsMounts() == 1
	})
	if st := containerStatus(t, d, runs); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container runs is %v, want running", st.State)
	}

	for _, id := range []string{exits, dies} {
		if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer of an unmounted exited container: %v", err)
		}
	}
	if n := rootfsMounts(); n != 1 {
		t.Errorf("%d root filesystems mounted with one container running, want 1", n)
	}
}
