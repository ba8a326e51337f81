package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestInheritedDescriptorStaysInDaemon: a descriptor the daemon inherited
// without close-on-exec (a host directory its parent leaked) reaches none
// of the processes it starts. Go's os/exec passes such a descriptor to
// every child, so before the daemon marked them at start each pod's
// keeper, the runner and the PID holder's parent held it for the pod's
// life, one fork away from the containers.
func TestInheritedDescriptorStaysInDaemon(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	leaked := startHoldingInheritedDir(t, d)
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}

	podCfg := podConfig("inheritfd", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("c", image, "sleep", "1000"))
	if _, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"true"}, Timeout: 30}); err != nil {
		t.Fatal(err)
	}

	daemonPID := d.Cmd.Process.Pid
	holders := 0
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, f := range fds {
			target, _ := os.Readlink(filepath.Join("/proc", p.Name(), "fd", f.Name()))
			if target != leaked {
				continue
			}
			if pid == daemonPID {
				holders++
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			t.Errorf("process %d (%q) holds the host directory the daemon inherited (fd %s)", pid, cmdline, f.Name())
		}
	}
	if holders != 1 {
		t.Errorf("the daemon holds the inherited directory %d times, want 1 (the check would prove nothing)", holders)
	}
}

// startHoldingInheritedDir starts d holding a descriptor of a new host
// directory without close-on-exec, as a daemon whose parent leaked one
// would, and returns the directory.
func startHoldingInheritedDir(t *testing.T, d *daemon) string {
	t.Helper()
	leaked := t.TempDir()
	fd, err := unix.Open(leaked, unix.O_RDONLY|unix.O_DIRECTORY, 0) // no O_CLOEXEC: inherited
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	unix.Close(fd)
	return leaked
}
