package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSplitImageFilesystem puts the containers' writable layers
// (container_root) on a tmpfs of the test's own, apart from the images in
// root: ImageFsInfo reports two filesystems, each with its own mountpoint
// and usage (KEP-4191), a container's writes land and are counted on the
// container filesystem only, and pods run as usual.
func TestSplitImageFilesystem(t *testing.T) {
	containerFs := t.TempDir()
	if err := unix.Mount("tmpfs", containerFs, "tmpfs", 0, "size=256m,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs for container_root: %v", err)
	}
	// Registered first, so it runs last: after the daemon's cleanup has
	// removed the pods and unmounted their root filesystems.
	t.Cleanup(func() {
		if err := unix.Unmount(containerFs, 0); err != nil {
			t.Errorf("unmount the container_root tmpfs: %v", err)
			unix.Unmount(containerFs, unix.MNT_DETACH)
		}
	})
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "container_root = %q\n", containerFs), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}

	fsInfo := func() (img, ctr *runtimeapi.FilesystemUsage) {
		t.Helper()
		resp, err := d.Img.ImageFsInfo(c, &runtimeapi.ImageFsInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.ImageFilesystems) != 1 || len(resp.ContainerFilesystems) != 1 {
			t.Fatalf("ImageFsInfo: %d image and %d container filesystems, want 1 and 1", len(resp.ImageFilesystems), len(resp.ContainerFilesystems))
		}
		return resp.ImageFilesystems[0], resp.ContainerFilesystems[0]
	}
	img0, ctr0 := fsInfo()
	imgMnt, ctrMnt := img0.GetFsId().GetMountpoint(), ctr0.GetFsId().GetMountpoint()
	if imgMnt != filepath.Join(d.Root, "storage") || ctrMnt != filepath.Join(containerFs, "storage") {
		t.Fatalf("ImageFsInfo mountpoints: images %q, containers %q; want %q and %q", imgMnt, ctrMnt, filepath.Join(d.Root, "storage"), filepath.Join(containerFs, "storage"))
	}
	if dev(t, imgMnt) == dev(t, ctrMnt) {
		t.Fatalf("%s and %s are on one filesystem: the test's tmpfs is not used", imgMnt, ctrMnt)
	}
	if img0.GetUsedBytes().GetValue() < 1<<20 {
		t.Errorf("image filesystem uses %d bytes with the test image pulled, want at least 1 MiB", img0.GetUsedBytes().GetValue())
	}

	podCfg := podConfig("split", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	// 4 MiB written into the container's root filesystem.
	id := startContainer(t, d, pod, podCfg, containerConfig("writer", image, "sh", "-c", "busybox dd if=/dev/zero of=/big bs=1048576 count=4 2>/dev/null && echo written && sleep 1000"))
	waitFor(t, 10*time.Second, "the container's write", func() bool {
		data, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "writer.log"))
		return len(data) > 0
	})
	matches, _ := filepath.Glob(filepath.Join(containerFs, "storage", "overlay", "*", "diff", "big"))
	if len(matches) != 1 {
		t.Errorf("the container's file is not in its writable layer under container_root: %v", matches)
	}
	img1, ctr1 := fsInfo()
	if grew := int64(ctr1.GetUsedBytes().GetValue()) - int64(ctr0.GetUsedBytes().GetValue()); grew < 4<<20 {
		t.Errorf("container filesystem grew by %d bytes after a 4 MiB write, want at least 4 MiB", grew)
	}
	if grew := int64(img1.GetUsedBytes().GetValue()) - int64(img0.GetUsedBytes().GetValue()); grew >= 1<<20 {
		t.Errorf("image filesystem grew by %d bytes after a container's write, want less than 1 MiB", grew)
	}
	// The writable layer is reported on the container filesystem, as the
	// kubelet matches the two by mountpoint.
	waitFor(t, 20*time.Second, "the writable layer's usage", func() bool {
		st, err := d.RT.ContainerStats(c, &runtimeapi.ContainerStatsRequest{ContainerId: id})
		return err == nil && st.GetStats().GetWritableLayer().GetUsedBytes().GetValue() >= 4<<20
	})
	st, _ := d.RT.ContainerStats(c, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if got := st.GetStats().GetWritableLayer().GetFsId().GetMountpoint(); got != ctrMnt {
		t.Errorf("writable layer reported on %q, want the container filesystem %q", got, ctrMnt)
	}
	ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"busybox", "ls", "-l", "/big"}, Timeout: 10})
	if err != nil || ex.ExitCode != 0 {
		t.Errorf("exec in the container: %v %q", err, ex.GetStderr())
	}

	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the removed container's layer to leave the container filesystem", func() bool {
		m, _ := filepath.Glob(filepath.Join(containerFs, "storage", "overlay", "*", "diff", "big"))
		return len(m) == 0
	})
}

func dev(t *testing.T, path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}
