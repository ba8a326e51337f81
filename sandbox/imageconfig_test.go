package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStopSignalName(t *testing.T) {
	cases := []struct {
		cfg  runtimeapi.Signal
		img  string
		want string
		bad  bool
	}{
		{img: "", want: "SIGTERM"},
		{img: "SIGQUIT", want: "SIGQUIT"},
		{img: "quit", want: "SIGQUIT"},
		{img: "3", want: "SIGQUIT"},
		{img: "SIGRTMIN+3", bad: true},
		{img: "0", bad: true},
		{img: "NOPE", bad: true},
		{cfg: runtimeapi.Signal_SIGNAL_SIGINT, img: "SIGQUIT", want: "SIGINT"},
	}
	for _, c := range cases {
		got, err := stopSignalName(&runtimeapi.ContainerConfig{StopSignal: c.cfg}, Image{ID: "img", StopSignal: c.img})
		if c.bad {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%v/%q: err = %v, want InvalidArgument", c.cfg, c.img, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v/%q = %q, %v; want %q", c.cfg, c.img, got, err, c.want)
		}
		ctr, old := Container{StopSignal: got}, Container{}
		if ctr.stopSignal().String() == "" || old.stopSignal().String() != "terminated" {
			t.Errorf("stopSignal of %q", got)
		}
	}
}

func TestMakeImageVolumesStaysInRootfs(t *testing.T) {
	rootfs, outside := t.TempDir(), t.TempDir()
	// An image symlink that points out of the rootfs must not be followed.
	if err := os.Symlink(outside, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	mounted := []*runtimeapi.Mount{{ContainerPath: "/mounted/"}}
	if err := makeImageVolumes(rootfs, []string{"/data/a", "/mounted", "/"}, mounted); err != nil {
		t.Fatal(err)
	}
	// Resolved inside the rootfs the link dangles: refused, not followed.
	if err := makeImageVolumes(rootfs, []string{"escape/b"}, nil); err == nil {
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
