package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image volumes (Mount.image, KEP-4639): an image the kubelet pulled,
// mounted read-only into a container, whole or one directory of it.

// volumeImage pushes the image the volume tests mount: the busybox
// rootfs plus data they read, and symlinks that try to lead a sub-path
// out of the image to hostDir, a directory of the host that holds a
// secret.
func volumeImage(t *testing.T, regAddr, hostDir string) string {
	return hostileImage(t, regAddr, "volume", func(root string) error {
		files := map[string]string{
			"data/marker":    "from-the-image\n",
			"data/sub/file":  "in-the-sub-path\n",
			"etc/iv-marker":  "image-etc\n",
			"data/not-a-dir": "a file\n",
		}
		for rel, content := range files {
			p := filepath.Join(root, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		links := map[string]string{
			"data/abs-sub": "/data/sub",                               // absolute: the image's own /data/sub
			"data/up":      "../../../../../../../../../etc",          // clamped at the image's root: its /etc
			"escape-abs":   hostDir,                                   // the host's directory, by absolute path
			"escape-up":    "../../../../../../../../../.." + hostDir, // and by climbing
		}
		for rel, target := range links {
			if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
				return err
			}
		}
		return nil
	})
}

func imageMount(path, image, subPath string) *runtimeapi.Mount {
	return &runtimeapi.Mount{ContainerPath: path, Readonly: true, ImageSubPath: subPath,
		Image: &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: image}}
}

// execCode runs cmd in the container and returns its exit code and output.
func execCode(t *testing.T, d *daemon, id string, cmd ...string) (int32, string) {
	t.Helper()
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 20})
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	return r.ExitCode, string(r.Stdout) + string(r.Stderr)
}

// imageVolumeLeftovers lists what image volumes left behind in the daemon's
// directory: mounts, bind points, storage containers of volumes.
func imageVolumeLeftovers(d *daemon) []string {
	var out []string
	for _, m := range mountsUnder(d.Dir) {
		if strings.Contains(m, "image-volumes") {
			out = append(out, "mount "+m)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(d.State, "image-volumes"))
	for _, e := range ents {
		out = append(out, "bind directory "+e.Name())
	}
	if n := volumeStorageContainers(d); n > 0 {
		out = append(out, fmt.Sprintf("%d storage containers of image volumes", n))
	}
	return out
}

// volumeStorageContainers counts the image store's records of image
// volumes (storage keeps volatile containers' records apart).
func volumeStorageContainers(d *daemon) int {
	n := 0
	for _, f := range []string{"containers.json", "volatile-containers.json"} {
		data, _ := os.ReadFile(filepath.Join(d.Root, "storage", "overlay-containers", f))
		n += strings.Count(string(data), "imageVolumeOf")
	}
	return n
}

// TestMountImageVolume: a container reads files of an image mounted whole
// and by sub-path (symlinks in the sub-path resolved inside the image);
// the mounts are read-only and executable; a sub-path that leads out of
// the image, is missing or is a file, a missing image and a writable
// volume are refused with their own codes, leaving nothing; the image
// cannot be removed while mounted; the volumes survive a clean restart and
// a crash of the daemon (a container created before starts after it and
// sees its volume); removing the containers releases everything.
func TestMountImageVolume(t *testing.T) {
	regAddr, base := testImage(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "secret"), []byte("HOST SECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol := volumeImage(t, regAddr, hostDir)
	d := newDaemon(t, regAddr)
	d.Start()
	pullAll(t, d, base, vol)
	volID, err := d.Img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: vol}})
	if err != nil || volID.GetImage().GetId() == "" {
		t.Fatalf("image status of %s: %v %v", vol, volID, err)
	}
	imageID := volID.GetImage().GetId()
	podCfg := podConfig("imagevol", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	mountsBefore := mountsUnder(d.Dir)

	// Refused: each create fails at once with its code and leaves nothing,
	// also when an earlier volume of the same container was mounted.
	for _, c := range []struct {
		name   string
		mounts []*runtimeapi.Mount
		code   codes.Code
		says   string
	}{
		{"missing-sub-path", []*runtimeapi.Mount{imageMount("/a", vol, ""), imageMount("/b", vol, "no/such/dir")}, codes.NotFound, "not in the image"},
		{"escape-abs", []*runtimeapi.Mount{imageMount("/a", vol, "escape-abs")}, codes.NotFound, "not in the image"},
		{"escape-up", []*runtimeapi.Mount{imageMount("/a", vol, "data/sub"), imageMount("/b", vol, "escape-up")}, codes.NotFound, "not in the image"},
		{"not-a-dir", []*runtimeapi.Mount{imageMount("/a", vol, "data/not-a-dir")}, codes.InvalidArgument, "not a directory"},
		{"missing-image", []*runtimeapi.Mount{imageMount("/a", "registry.k8s.io/e2e-test-images/never-pulled:1", "")}, codes.NotFound, "pull it first"},
		{"writable", []*runtimeapi.Mount{{ContainerPath: "/a", Image: &runtimeapi.ImageSpec{Image: vol}}}, codes.InvalidArgument, "read-only"},
	} {
		cfg := containerConfig(c.name, base, "sleep", "300")
		cfg.Mounts = c.mounts
		_, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: CreateContainer = %v, want %s saying %q", c.name, err, c.code, c.says)
			continue
		}
		if c.code == codes.NotFound && !strings.HasPrefix(status.Convert(err).Message(), "ImageVolumeMountFailed") {
			t.Errorf("%s: message %q does not start with ImageVolumeMountFailed (the kubelet counts those)", c.name, status.Convert(err).Message())
		}
		t.Logf("%s: %s: %s", c.name, status.Code(err), status.Convert(err).Message())
	}
	nothingLeft(t, d, mountsBefore)
	if left := imageVolumeLeftovers(d); len(left) > 0 {
		t.Errorf("refused creates left: %v", left)
	}

	// Mounted: whole, by sub-path, through the image's own symlinks.
	cfg := containerConfig("reader", base, "sleep", "300")
	cfg.Mounts = []*runtimeapi.Mount{
		imageMount("/iv", vol, ""),
		imageMount("/sub", vol, "data/sub"),
		imageMount("/abs", vol, "data/abs-sub"),
		imageMount("/up", vol, "data/up"),
	}
	reader := startContainer(t, d, pod, podCfg, cfg)
	reads := map[string]string{
		"/iv/data/marker":   "from-the-image",
		"/sub/file":         "in-the-sub-path",
		"/abs/file":         "in-the-sub-path",
		"/up/iv-marker":     "image-etc",
		"/iv/etc/iv-marker": "image-etc",
	}
	check := func(when string, id string) {
		t.Helper()
		for path, want := range reads {
			if code, out := execCode(t, d, id, "cat", path); code != 0 || strings.TrimSpace(out) != want {
				t.Errorf("%s: cat %s = %d %q, want %q", when, path, code, out, want)
			}
		}
	}
	check("started", reader)
	if code, _ := execCode(t, d, reader, "ls", "/sub/marker"); code == 0 {
		t.Errorf("the sub-path mount shows the image's root")
	}
	for _, p := range []string{"/iv/new", "/sub/new", "/iv/data/marker"} {
		if code, out := execCode(t, d, reader, "sh", "-c", "echo x > "+p); code == 0 || !strings.Contains(out, "Read-only") {
			t.Errorf("writing %s in an image volume: exit %d %q, want a read-only file system", p, code, out)
		}
	}
	if code, out := execCode(t, d, reader, "/iv/bin/busybox", "true"); code != 0 {
		t.Errorf("running a program of the image volume: %d %s (noexec?)", code, out)
	}
	st := containerStatus(t, d, reader)
	if len(st.Mounts) != 4 || st.Mounts[0].GetImage().GetImage() != imageID || st.Mounts[0].GetImage().GetImageRef() != imageID ||
		st.Mounts[0].GetImage().GetUserSpecifiedImage() != vol || st.Mounts[1].GetImageSubPath() != "data/sub" {
		t.Errorf("ContainerStatus mounts %v, want the image volumes naming %s", st.Mounts, imageID)
	}

	// The image stays while mounted, by any name.
	for _, ref := range []string{vol, imageID} {
		_, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), reader) {
			t.Errorf("RemoveImage %s while mounted = %v, want FailedPrecondition naming %s", ref, err, reader)
		}
	}
	is, err := d.Img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: vol}, Verbose: true})
	if err != nil || is.GetImage().GetId() != imageID || !strings.Contains(is.GetInfo()["info"], reader) {
		t.Errorf("ImageStatus after the refused removal: %v %v, want the image, its info naming %s", is.GetImage(), err, reader)
	}

	// A container created now starts after the daemon restarts, cleanly
	// (the image store unmounts everything) and then after a crash (the
	// store's repair must keep the volumes' storage containers).
	cfg = containerConfig("later", base, "sleep", "300")
	cfg.Mounts = []*runtimeapi.Mount{imageMount("/iv", vol, ""), imageMount("/sub", vol, "data/sub"), imageMount("/abs", vol, "data/abs-sub"), imageMount("/up", vol, "data/up")}
	cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	later := cr.ContainerId
	d.Stop()
	d.Start()
	check("after a clean restart", reader)
	d.Kill()
	d.Start()
	check("after a crash", reader)
	// The store's repair after the crash kept the volumes' storage
	// containers with the containers that mount them.
	if n := volumeStorageContainers(d); n != 8 {
		t.Errorf("%d storage containers of image volumes after the crash, want 8 (2 containers, 4 volumes each)", n)
	}
	if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: later}); err != nil {
		t.Fatalf("start a container with image volumes after restarts: %v", err)
	}
	check("started after the restarts", later)
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RemoveImage after the restarts = %v, want FailedPrecondition", err)
	}

	// Removing the containers releases the volumes; then the image goes.
	for _, id := range []string{reader, later} {
		if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); err != nil {
		t.Errorf("RemoveImage once no container mounts it: %v", err)
	}
	if is, err := d.Img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); err != nil || is.GetImage() != nil {
		t.Errorf("ImageStatus after the removal: %v %v, want none", is.GetImage(), err)
	}
	if left := imageVolumeLeftovers(d); len(left) > 0 {
		t.Errorf("removed containers left: %v", left)
	}
	// The restarts mounted the store's overlay home again: order aside.
	if after := mountsUnder(d.Dir); !slices.Equal(slices.Sorted(slices.Values(after)), slices.Sorted(slices.Values(mountsBefore))) {
		t.Errorf("mounts changed:\nbefore %v\nafter  %v", mountsBefore, after)
	}
}

// TestMountImageVolumeUserns: in a pod with its own user namespace the
// image volume is mapped as the root filesystem is: the image's root-owned
// files are root's in the container, not nobody's.
func TestMountImageVolumeUserns(t *testing.T) {
	regAddr, base := testImage(t)
	vol := volumeImage(t, regAddr, t.TempDir())
	d := newDaemon(t, regAddr)
	d.Start()
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.RuntimeHandlers) == 0 || !st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces() {
		t.Skipf("the daemon does not offer user namespaces here (see its log)")
	}
	pullAll(t, d, base, vol)
	podCfg := podConfig("imagevol-userns", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(400000)},
	}
	pod := runPod(t, d, podCfg).PodSandboxId
	u := usernsOptions(400000)
	cfg := containerConfig("reader", base, "sleep", "300")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions,
	}}
	// The kubelet sends the pod's mappings with the mount.
	m := imageMount("/iv", vol, "data")
	m.UidMappings, m.GidMappings = u.Uids, u.Gids
	cfg.Mounts = []*runtimeapi.Mount{m}
	ctr := startContainer(t, d, pod, podCfg, cfg)
	if got := strings.TrimSpace(execOut(t, d, ctr, "stat", "-c", "%u:%g", "/iv/marker")); got != "0:0" {
		t.Errorf("owner of an image volume's root file in the user namespace = %s, want 0:0", got)
	}
	if got := strings.TrimSpace(execOut(t, d, ctr, "cat", "/iv/marker")); got != "from-the-image" {
		t.Errorf("cat /iv/marker = %q", got)
	}
	if code, out := execCode(t, d, ctr, "sh", "-c", "echo x > /iv/new"); code == 0 {
		t.Errorf("wrote into the image volume as the namespace's root: %s", out)
	}
	if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); err != nil {
		t.Errorf("RemoveImage once no container mounts it: %v", err)
	}
	if left := imageVolumeLeftovers(d); len(left) > 0 {
		t.Errorf("removed container left: %v", left)
	}
}

// TestMountImageVolumeCrash: the daemon crashes in the middle of a
// CreateContainer with image volumes, after they are mounted and bound:
// before the container's record is saved (the restart's sweep of orphan
// bundles must release them) and after (the container is kept with its
// volumes; removing it releases them). Nothing is left either way, and
// the image can be removed.
func TestMountImageVolumeCrash(t *testing.T) {
	regAddr, base := testImage(t)
	vol := volumeImage(t, regAddr, t.TempDir())
	d := newDaemon(t, regAddr)
	d.Start()
	pullAll(t, d, base, vol)
	podCfg := podConfig("imagevol-crash", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	for _, fp := range []string{"create-container-after-spec", "create-container-after-save"} {
		d.Stop()
		d.Env = []string{"PEAPOD_FAILPOINTS=" + fp}
		d.Start()
		cfg := containerConfig("crash", base, "sleep", "300")
		cfg.Mounts = []*runtimeapi.Mount{imageMount("/iv", vol, ""), imageMount("/sub", vol, "data/sub")}
		_, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if code := status.Code(err); code != codes.Unavailable && code != codes.Unknown {
			t.Fatalf("%s: CreateContainer = %v, want the daemon to crash", fp, err)
		}
		d.waitCrash()
		d.Env = nil
		d.Start()
		list, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fp == "create-container-after-spec" && len(list.Containers) != 0:
			t.Errorf("%s: containers after the restart: %v, want none", fp, list.Containers)
		case fp == "create-container-after-save" && len(list.Containers) != 1:
			t.Errorf("%s: containers after the restart: %v, want the one saved", fp, list.Containers)
		}
		if fp == "create-container-after-save" && len(list.Containers) == 1 {
			id := list.Containers[0].Id
			if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("%s: RemoveImage while the saved container mounts it = %v, want FailedPrecondition", fp, err)
			}
			if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatalf("%s: start the saved container: %v", fp, err)
			}
			if got := strings.TrimSpace(execOut(t, d, id, "cat", "/sub/file")); got != "in-the-sub-path" {
				t.Errorf("%s: cat /sub/file = %q", fp, got)
			}
			if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, fp+": the image volumes to be released", func() bool { return len(imageVolumeLeftovers(d)) == 0 })
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); err != nil {
		t.Errorf("RemoveImage after the crashes: %v", err)
	}
}

// TestMountImageVolumeReboot: after a reboot (processes and mounts gone,
// state emptied, root kept) the exited container still holds its image
// (RemoveImage refused), a new container mounts the image again, and
// removing the containers releases every volume's storage container,
// though nothing in state marks them any more.
func TestMountImageVolumeReboot(t *testing.T) {
	regAddr, base := testImage(t)
	vol := volumeImage(t, regAddr, t.TempDir())
	d := newDaemon(t, regAddr)
	d.Start()
	pullAll(t, d, base, vol)
	podCfg := podConfig("imagevol-reboot", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("work", base, "sleep", "3600")
	cfg.Mounts = []*runtimeapi.Mount{imageMount("/iv", vol, ""), imageMount("/sub", vol, "data/sub")}
	ctr := startContainer(t, d, pod, podCfg, cfg)
	victims := []int{pausePID(ctx(t), d, pod), containerPID(t, d, ctr)}

	simulateReboot(t, d, victims)
	d.Start()

	if s := containerStatus(t, d, ctr); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.Mounts[0].GetImage().GetImage() == "" {
		t.Errorf("container after the reboot: %v, mounts %v", s.State, s.Mounts)
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RemoveImage while an exited container mounts it = %v, want FailedPrecondition", err)
	}
	newPod := runPod(t, d, podConfig("imagevol-reboot-2", t.TempDir())).PodSandboxId
	again := startContainer(t, d, newPod, podConfig("imagevol-reboot-2", t.TempDir()), cfg)
	if got := strings.TrimSpace(execOut(t, d, again, "cat", "/sub/file")); got != "in-the-sub-path" {
		t.Errorf("cat /sub/file after the reboot = %q", got)
	}
	for _, p := range []string{pod, newPod} {
		if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Fatal(err)
		}
	}
	if left := imageVolumeLeftovers(d); len(left) > 0 {
		t.Errorf("removed pods left: %v", left)
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: vol}}); err != nil {
		t.Errorf("RemoveImage once no container mounts it: %v", err)
	}
}
