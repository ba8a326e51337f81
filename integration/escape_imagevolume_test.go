package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// hostileVolumesImage pushes the busybox image with the given VOLUME
// paths and pulls it into a fresh daemon.
func hostileVolumesImage(t *testing.T, tag string, volumes []string) (*daemon, string) {
	regAddr, _ := testImage(t)
	testenv.PushImage(t, regAddr, "e2e-test-images/busybox:"+tag, testenv.BusyboxRootfs(t), testenv.ImageConfig{
		Cmd: []string{"sh"}, Volumes: volumes,
	})
	image := "registry.k8s.io/e2e-test-images/busybox:" + tag
	d := newDaemon(t, regAddr)
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	return d, image
}

// TestEscapeImageVolumeDepth: one VOLUME 1,500 directories deep in an
// image run by a user-namespaced pod. The daemon chowned the directories
// it made for it by resolving every prefix of the path again by name, a
// cost in the cube of the depth: the create ran for minutes (and again at
// every kubelet retry). Now it must finish within 30 s, and the
// directories still belong to the container's root.
func TestEscapeImageVolumeDepth(t *testing.T) {
	deep := "/deep" + strings.Repeat("/d", 1500)
	d, image := hostileVolumesImage(t, "deepvol", []string{deep})
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
	podCfg := podConfig("deepvol", filepath.Join(d.Dir, "logs"))
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(300000)},
	}
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("deep", image, "sleep", "300")
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeoutScale)
	defer cancel()
	start := time.Now()
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("create with a VOLUME 1,500 directories deep: %v after %s", err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("created in %s", time.Since(start).Round(time.Millisecond))
	if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(execOut(t, d, cr.ContainerId, "stat", "-c", "%u:%g", "/deep", deep)); strings.Join(got, " ") != "0:0 0:0" {
		t.Errorf("owners of the VOLUME directories in the container = %v, want root", got)
	}
}

// TestEscapeImageVolumeFlood: an image config of megabytes of VOLUME
// paths would have the daemon make millions of directories in the
// writable layer at every create (CPU of the daemon, inodes of the node).
// More than 64 KiB of paths is refused with InvalidArgument, before any is
// made.
func TestEscapeImageVolumeFlood(t *testing.T) {
	var vols []string
	for i, n := 0, 0; n <= 64<<10; i++ {
		v := fmt.Sprintf("/v%d%s", i, strings.Repeat("/a", 500))
		vols = append(vols, v)
		n += len(v)
	}
	d, image := hostileVolumesImage(t, "volflood", vols)
	podCfg := podConfig("volflood", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeoutScale)
	defer cancel()
	_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("flood", image, "sleep", "300"), SandboxConfig: podCfg})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("create with %d VOLUMEs 500 directories deep: %v, want InvalidArgument", len(vols), err)
	}
	t.Logf("refused: %v", err)
}
