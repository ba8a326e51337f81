package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/oci"
)

func TestMakeImageVolumesStaysInRootfs(t *testing.T) {
	rootfs, outside := t.TempDir(), t.TempDir()
	// An image symlink that points out of the rootfs must not be followed.
	if err := os.Symlink(outside, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	mounted := []*runtimeapi.Mount{{ContainerPath: "/mounted/"}}
	if err := MakeImageVolumes(rootfs, []string{"/data/a", "/mounted", "/"}, mounted); err != nil {
		t.Fatal(err)
	}
	// Resolved inside the rootfs the link dangles: refused, not followed.
	if err := MakeImageVolumes(rootfs, []string{"escape/b"}, nil); err == nil {
		t.Errorf("volume through a dangling in-rootfs symlink was accepted")
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "data/a")); err != nil || !fi.IsDir() {
		t.Errorf("/data/a not created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "b")); err == nil {
		t.Errorf("volume created outside the rootfs through a symlink")
	}
	if _, err := os.Stat(filepath.Join(rootfs, "mounted")); err == nil {
		t.Errorf("/mounted is covered by a mount and must not be created")
	}
}

// TestChownImageVolumes: the directories MakeImageVolumes creates go to
// the pod's root, through image symlinks resolved inside the rootfs, and
// nothing else changes owner (the rootfs, directories of the image, the
// host directory an absolute symlink names on the host).
func TestChownImageVolumes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	rootfs, outside := t.TempDir(), t.TempDir()
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(os.Mkdir(filepath.Join(rootfs, "image"), 0o755))
	mustDo(os.Lchown(filepath.Join(rootfs, "image"), 1000, 1000))
	mustDo(os.Symlink("/image", filepath.Join(rootfs, "link")))
	// Inside the rootfs, an absolute symlink means <rootfs><target>.
	mustDo(os.MkdirAll(filepath.Join(rootfs, outside), 0o755))
	for p := outside; p != "/"; p = filepath.Dir(p) {
		mustDo(os.Lchown(filepath.Join(rootfs, p), 1000, 1000)) // an image's owner, not the host's root
	}
	mustDo(os.Symlink(outside, filepath.Join(rootfs, "abs")))
	vols := []string{"/data/a/b", "/data/a/c", "/link/v", "/abs/w", "/mounted"}
	mounts := []*runtimeapi.Mount{{ContainerPath: "/mounted"}}
	mustDo(MakeImageVolumes(rootfs, vols, mounts))
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000, Length: 65536}}
	pod := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}}}
	mustDo(ChownImageVolumes(rootfs, vols, mounts, pod))
	owner := func(p string) string {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	for p, want := range map[string]string{
		"data": "300000:300000", "data/a": "300000:300000", "data/a/b": "300000:300000", "data/a/c": "300000:300000",
		"image": "1000:1000", "image/v": "300000:300000",
		filepath.Join(outside[1:], "w"): "300000:300000", outside[1:]: "1000:1000",
		".": "0:0", "link": "0:0",
	} {
		if got := owner(filepath.Join(rootfs, p)); got != want {
			t.Errorf("owner of %s = %s, want %s", p, got, want)
		}
	}
	if got := owner(outside); got != "0:0" {
		t.Errorf("owner of the host directory %s = %s, want 0:0 (it is outside the rootfs)", outside, got)
	}
	if _, err := os.Stat(filepath.Join(outside, "w")); err == nil {
		t.Errorf("a volume was made outside the rootfs")
	}
}

// TestImageVolumePathsBounded: megabytes of VOLUME paths are refused
// before a directory is made.
func TestImageVolumePathsBounded(t *testing.T) {
	rootfs := t.TempDir()
	var vols []string
	for i := 0; len(strings.Join(vols, "")) <= maxImageVolumeBytes; i++ {
		vols = append(vols, fmt.Sprintf("/v%d%s", i, strings.Repeat("/a", 1000)))
	}
	err := MakeImageVolumes(rootfs, vols, nil)
	if !errors.Is(err, oci.ErrInvalidArgument) {
		t.Fatalf("%d bytes of volume paths: %v, want an invalid argument", len(strings.Join(vols, "")), err)
	}
	if ents, _ := os.ReadDir(rootfs); len(ents) != 0 {
		t.Errorf("directories made before the refusal: %d", len(ents))
	}
}
