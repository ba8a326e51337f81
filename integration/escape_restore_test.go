package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestEscapeRestoreHostPath: CreateContainer restores when the image is
// an absolute path. The archive's open must never reach a device driver
// (a /dev/watchdog arms when opened, a tape rewinds) nor read a /proc or
// /sys file: before the fix the daemon opened whatever the path named,
// O_NONBLOCK, and only then looked at what it was. A device node made
// here stands for the host's: inotify sees every open of it but O_PATH
// ones. PullImage and ImageStatus of such a path must not succeed either
// (the kubelet refuses such image names itself and sends CreateContainer
// the runtime's image ID, never the pod's string).
func TestEscapeRestoreHostPath(t *testing.T) {
	d, _ := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("restore-path", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	dev := filepath.Join(t.TempDir(), "watchdog")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, dev, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dev, "/proc/self/environ", "/sys/kernel/mm/transparent_hugepage/enabled", "/"} {
		_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
			Config: containerConfig("restored", p, "sh"), SandboxConfig: podCfg})
		if grpcCode(err) != "InvalidArgument" {
			t.Errorf("CreateContainer from %s = %v, want InvalidArgument", p, err)
		}
		t.Logf("CreateContainer from %s: %v", p, err)
	}
	if n, _ := unix.Read(in, make([]byte, 4096)); n > 0 {
		t.Errorf("the daemon opened the device node named as a checkpoint archive (inotify IN_OPEN)")
	}
	for _, p := range []string{dev, "/var/lib/kubelet/checkpoints/checkpoint-other_ns-c-2026.tar"} {
		if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: p}}); err == nil {
			t.Errorf("PullImage(%s) succeeded", p)
		}
		if st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: p}}); err == nil && st.GetImage() != nil {
			t.Errorf("ImageStatus(%s) found an image: %v", p, st.GetImage())
		}
	}
}

// fakeCRIU builds a `criu` whose check passes and whose swrk (what
// libcontainer starts for every dump) never answers: a dump CRIU cannot
// finish, as a container can cause (a task it cannot seize).
func fakeCRIU(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "criu.c")
	os.WriteFile(src, []byte(`#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "swrk") == 0)
		for (;;) pause();
	return 0; /* check, --version */
}
`), 0o600)
	bin := filepath.Join(dir, "criu")
	if out, err := exec.Command("gcc", "-O", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v: %s", err, out)
	}
	t.Cleanup(func() { killByExe(t, bin) })
	return dir
}

// killByExe SIGKILLs the processes running exe (those this test's fake
// made; a daemon that never killed them leaves them behind).
func killByExe(t *testing.T, exe string) (n int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && p == exe {
			syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	return n
}

// TestEscapeCheckpointDumpHang: a dump CRIU never finishes held the
// container's lock for ever (and libcontainer's criu child with it):
// every later call on that container (stop, remove, status updates)
// waited behind it. Now the dump ends at the request's timeout, criu is
// killed, the container keeps running and a stop goes through at once.
func TestEscapeCheckpointDumpHang(t *testing.T) {
	fake := fakeCRIU(t)
	regAddr, image := testImage(t)
	opts := daemonOptions(t, regAddr)
	opts.Env = append(opts.Env, "PATH="+fake+":"+os.Getenv("PATH"))
	d := &daemon{testenv.NewDaemon(t, opts)}
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("dump-hang", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	id := startContainer(t, d, pod, podCfg, containerConfig("sleeper", image, "sleep", "600"))

	location := filepath.Join(t.TempDir(), "sleeper.tar")
	start := time.Now()
	_, err := d.RT.CheckpointContainer(c, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: location, Timeout: 3})
	took := time.Since(start)
	t.Logf("CheckpointContainer with a 3 s timeout: %v after %v", err, took.Round(time.Millisecond))
	if grpcCode(err) != "DeadlineExceeded" || took > 20*time.Second {
		t.Errorf("CheckpointContainer = %v after %v, want DeadlineExceeded within about 3 s", err, took)
	}
	if n := killByExe(t, filepath.Join(fake, "criu")); n > 0 {
		t.Errorf("%d criu processes still running after the dump's deadline", n)
	}
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("after the cut dump: %v, %v; want running", st.GetStatus().GetState(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(location), ".*")); len(left) > 0 {
		t.Errorf("the cut dump left %v beside the archive", left)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second*timeoutScale)
	defer cancel()
	start = time.Now()
	if _, err := d.RT.StopContainer(stopCtx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
		t.Fatalf("StopContainer after the cut dump: %v after %v (the container's lock still held?)", err, time.Since(start))
	}
	t.Logf("StopContainer after the cut dump: %v", time.Since(start).Round(time.Millisecond))
}

// TestCRIUSupportDisabled: with enable_criu_support = false a restore is
// refused before its archive is even opened (the device node stays
// unopened), and CheckpointContainer before CRIU is asked.
func TestCRIUSupportDisabled(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte("enable_criu_support = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Start()
	pullAll(t, d, image)
	c := ctx(t)
	podCfg := podConfig("criu-off", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	id := startContainer(t, d, pod, podCfg, containerConfig("sleeper", image, "sleep", "600"))
	archive := filepath.Join(t.TempDir(), "ckpt.tar")
	os.WriteFile(archive, []byte("not read"), 0o600)
	_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
		Config: containerConfig("restored", archive, "sh"), SandboxConfig: podCfg})
	if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), "enable_criu_support") {
		t.Errorf("restore with CRIU support off = %v, want FailedPrecondition naming enable_criu_support", err)
	}
	_, err = d.RT.CheckpointContainer(c, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: filepath.Join(t.TempDir(), "c.tar")})
	if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), "enable_criu_support") {
		t.Errorf("checkpoint with CRIU support off = %v, want FailedPrecondition naming enable_criu_support", err)
	}
}
