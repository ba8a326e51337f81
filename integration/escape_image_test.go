package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// Image content is hostile: what the daemon reads from a container's root
// filesystem (the image's /etc/passwd and /etc/group, to resolve the user)
// must neither block a CRI call nor make the daemon open a FIFO or a
// device node on the host.

// hostileImage pushes a copy of the busybox test image whose root
// filesystem mutate has changed, and returns the name pods use.
func hostileImage(t *testing.T, regAddr, name string, mutate func(root string) error) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	if err := mutate(root); err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/"+name+":it", root, testenv.ImageConfig{Cmd: []string{"sh"}})
	return "registry.k8s.io/e2e-test-images/" + name + ":it"
}

// replaceWith makes rootfs's file rel something else.
func replaceWith(rel string, make func(path string) error) func(root string) error {
	return func(root string) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
		return make(p)
	}
}

func fifoAt(p string) error    { return unix.Mkfifo(p, 0o644) }
func devZeroAt(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))) }

func daemonThreads(t *testing.T, d *daemon) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// createRefused creates a container of image and wants it refused as
// InvalidArgument with a message holding every one of want, within 5 s.
func createRefused(t *testing.T, d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, name, image string, want ...string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(name, image, "true"), SandboxConfig: podCfg})
	took := time.Since(start)
	if took > 5*time.Second {
		t.Errorf("%s: CreateContainer took %v", name, took)
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("%s: CreateContainer = %v, want InvalidArgument", name, err)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not say %q", name, err, w)
		}
	}
	t.Logf("%s: refused in %v: %v", name, took.Round(time.Millisecond), status.Convert(err).Message())
}

// nothingLeft checks that the refused creates left no container, bundle
// or mount behind.
func nothingLeft(t *testing.T, d *daemon, mountsBefore []string) {
	t.Helper()
	list, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 0 {
		t.Errorf("containers listed after refused creates: %v", list.Containers)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.State, "containers")); len(ents) != 0 {
		t.Errorf("bundles left: %v", ents)
	}
	if after := mountsUnder(d.Dir); !slices.Equal(after, mountsBefore) {
		t.Errorf("mounts changed:\nbefore %v\nafter  %v", mountsBefore, after)
	}
}

func pullAll(t *testing.T, d *daemon, images ...string) {
	t.Helper()
	for _, image := range images {
		if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			t.Fatalf("pull %s: %v", image, err)
		}
	}
}

// TestEscapeImagePasswdFIFO: an image whose /etc/passwd or /etc/group is a
// FIFO. Opening it by path blocked CreateContainer for ever (an OS thread,
// a mount and a bundle per call; SIGTERM no longer stopped the daemon).
// Now the create is refused at once, nothing is left, and the daemon stops
// promptly.
func TestEscapeImagePasswdFIFO(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	passwdFIFO := hostileImage(t, regAddr, "passwd-fifo", replaceWith("etc/passwd", fifoAt))
	groupFIFO := hostileImage(t, regAddr, "group-fifo", replaceWith("etc/group", fifoAt))
	d := newDaemon(t, regAddr)
	d.Start()
	pullAll(t, d, passwdFIFO, groupFIFO)
	podCfg := podConfig("fifo", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	threads, mounts := daemonThreads(t, d), mountsUnder(d.Dir)

	for i := 0; i < 3; i++ {
		createRefused(t, d, pod, podCfg, fmt.Sprintf("passwd-%d", i), passwdFIFO, "/etc/passwd", "FIFO")
		createRefused(t, d, pod, podCfg, fmt.Sprintf("group-%d", i), groupFIFO, "/etc/group", "FIFO")
	}
	nothingLeft(t, d, mounts)
	if now := daemonThreads(t, d); now > threads+4 {
		t.Errorf("daemon threads grew from %d to %d over 6 refused creates", threads, now)
	}

	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the daemon took %v to stop on SIGTERM", took)
	}
}

// TestEscapeImagePasswdDevice: an image whose /etc/passwd or /etc/group is
// a device node, or a symlink to one, or larger than the bound. The daemon
// used to open the device on the host (and then ignore it); now it is
// refused without being opened. A symlink that leads out of the rootfs
// resolves inside it.
func TestEscapeImagePasswdDevice(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	images := map[string]string{
		"passwd-chardev": hostileImage(t, regAddr, "passwd-chardev", replaceWith("etc/passwd", devZeroAt)),
		"group-chardev":  hostileImage(t, regAddr, "group-chardev", replaceWith("etc/group", devZeroAt)),
		"passwd-devlink": hostileImage(t, regAddr, "passwd-devlink", func(root string) error {
			// The image carries its own /dev/zero node for the link to reach.
			if err := replaceWith("dev/zero", devZeroAt)(root); err != nil {
				return err
			}
			return replaceWith("etc/passwd", func(p string) error { return os.Symlink("/dev/zero", p) })(root)
		}),
		"passwd-dangling": hostileImage(t, regAddr, "passwd-dangling", replaceWith("etc/passwd", func(p string) error {
			return os.Symlink("../../../../../../dev/zero", p)
		})),
		"passwd-oversize": hostileImage(t, regAddr, "passwd-oversize", replaceWith("etc/passwd", func(p string) error {
			line := "root:x:0:0:root:/root:/bin/sh\n"
			return os.WriteFile(p, []byte(strings.Repeat(line, (11<<20)/len(line))), 0o644)
		})),
	}
	d := newDaemon(t, regAddr)
	d.Start()
	for _, image := range images {
		pullAll(t, d, image)
	}
	podCfg := podConfig("dev", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	mounts := mountsUnder(d.Dir)

	createRefused(t, d, pod, podCfg, "passwd-chardev", images["passwd-chardev"], "/etc/passwd", "character device")
	createRefused(t, d, pod, podCfg, "group-chardev", images["group-chardev"], "/etc/group", "character device")
	createRefused(t, d, pod, podCfg, "passwd-devlink", images["passwd-devlink"], "/etc/passwd", "character device")
	createRefused(t, d, pod, podCfg, "passwd-oversize", images["passwd-oversize"], "/etc/passwd", "bytes")
	nothingLeft(t, d, mounts)

	// The dangling symlink resolves inside the rootfs, where there is no
	// /dev/zero at create: the image has no passwd. A numeric user works;
	// a name is not found, as without the file.
	cfg := containerConfig("dangling", images["passwd-dangling"], "true")
	if _, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg}); err != nil {
		t.Errorf("numeric user with a dangling /etc/passwd link: %v", err)
	}
	cfg = containerConfig("dangling-name", images["passwd-dangling"], "true")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "root"}}
	if _, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("user name with a dangling /etc/passwd link: %v, want InvalidArgument", err)
	}
}

// TestEscapeDetachedCreateVsRemovedPod: a CreateContainer whose caller has
// gone goes on detached. Held at its last step (failpoint), it must not
// record the container into the pod removed meanwhile, leave nothing
// behind, and not keep the daemon from stopping on SIGTERM.
func TestEscapeDetachedCreateVsRemovedPod(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	release := filepath.Join(d.Dir, "release")
	d.Env = append(d.Env, "PEAPOD_FAILPOINTS=create-container-after-spec=hold:"+release)
	d.Start()
	pullAll(t, d, image)
	mounts := mountsUnder(d.Dir)

	held := func(n int) {
		t.Helper()
		waitFor(t, 20*time.Second, "the create to reach the failpoint", func() bool {
			log, _ := os.ReadFile(d.LogPath)
			return strings.Count(string(log), "failpoint create-container-after-spec: holding") >= n
		})
	}
	createLeft := func(pod string, podCfg *runtimeapi.PodSandboxConfig, name string) {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(name, image, "sleep", "1000"), SandboxConfig: podCfg})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("held create: %v, want DeadlineExceeded", err)
		}
	}
	noContainers := func(when string) {
		t.Helper()
		list, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Containers) != 0 {
			t.Errorf("%s: containers listed: %v", when, list.Containers)
		}
	}

	// The pod goes while the create is held; then the create goes on.
	podCfg := podConfig("race", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	createLeft(pod, podCfg, "late")
	held(1)
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the released create to undo its steps", func() bool {
		ents, _ := os.ReadDir(filepath.Join(d.State, "containers"))
		return len(ents) == 0 && slices.Equal(mountsUnder(d.Dir), mounts)
	})
	noContainers("after the released create")
	d.Stop()
	d.Start()
	noContainers("after a restart")

	// SIGTERM while a create is held: the daemon still stops promptly.
	os.Remove(release)
	podCfg = podConfig("race2", t.TempDir())
	pod = runPod(t, d, podCfg).PodSandboxId
	createLeft(pod, podCfg, "at-shutdown")
	held(2)
	start := time.Now()
	d.Stop()
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("the daemon took %v to stop with a create in flight", took)
	}
	d.Start() // destroy removes the pod
	noContainers("after a stop with a create in flight")
	if ents, _ := os.ReadDir(filepath.Join(d.State, "containers")); len(ents) != 0 {
		t.Errorf("bundles left: %v", ents)
	}
}
