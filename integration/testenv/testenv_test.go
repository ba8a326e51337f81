package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestBusyboxRootfsRuns(t *testing.T) {
	root := BusyboxRootfs(t)
	for _, p := range []string{"bin/busybox", "bin/sh", "bin/ls", "etc/passwd", "etc/group"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	// Run the busybox shell inside the rootfs: proves loader + libs are there.
	out, err := exec.Command("chroot", root, "/bin/sh", "-c", "echo hello; id -u; ls /bin | wc -l").CombinedOutput()
	if err != nil {
		t.Fatalf("chroot sh: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "hello\n0\n") {
		t.Fatalf("unexpected output %q", out)
	}
	if BusyboxRootfs(t) != root {
		t.Fatal("rootfs not cached")
	}
}

func TestPushImage(t *testing.T) {
	addr := StartRegistry(t)
	root := BusyboxRootfs(t)
	d1 := PushImage(t, addr, "library/busybox:1.0", root, ImageConfig{Cmd: []string{"sh"}, User: "33", Labels: map[string]string{"a": "b"}})
	d2 := PushImage(t, addr, "other/busybox:2", root, ImageConfig{Cmd: []string{"sh"}, User: "33", Labels: map[string]string{"a": "b"}})
	if d1 != d2 || !strings.HasPrefix(d1, "sha256:") {
		t.Fatalf("digests not reproducible: %s %s", d1, d2)
	}
	ref, err := name.ParseReference(addr+"/library/busybox:1.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "33" || len(cf.Config.Env) == 0 || !strings.HasPrefix(cf.Config.Env[0], "PATH=") {
		t.Fatalf("config: %+v", cf.Config)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
}
