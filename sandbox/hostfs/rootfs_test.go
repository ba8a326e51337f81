package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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
