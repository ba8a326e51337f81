package integration

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// `peapod image import` (what a kind user runs instead of `kind load`):
// an OCI layout tar as `ctr images export` writes it (full name in
// containerd's annotation), a docker-archive with two tags, an OCI layout
// directory whose ref.name is only a tag (named with --name), imported
// into the store of a running daemon; the daemon serves them at once and
// runs a container from one. Bad files fail with a clear message and store
// nothing; a path that leaves the archive writes nothing outside.
func TestImageImport(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	d := newDaemon(t, regAddr)
	d.Start()
	c := ctx(t)
	dir := t.TempDir()
	rootfs := testenv.BusyboxRootfs(t)
	build := func(cmd ...string) v1.Image {
		img, err := testenv.BuildImage(rootfs, testenv.ImageConfig{Cmd: cmd})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	ociImg, dockerImg, dirImg := build("sh", "-c", "echo from-oci-archive"), build("echo", "docker"), build("echo", "dir")

	// An OCI layout, as a tar with "./" names (ctr's export) and as a directory.
	writeLayout := func(p string, img v1.Image, ann map[string]string) {
		lp, err := layout.Write(p, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
			t.Fatal(err)
		}
	}
	ociDir := filepath.Join(dir, "oci-layout")
	writeLayout(ociDir, ociImg, map[string]string{
		"io.containerd.image.name": "registry.k8s.io/kind-test/oci:v1", "org.opencontainers.image.ref.name": "v1"})
	ociTar := filepath.Join(dir, "oci.tar")
	if out, err := exec.Command("tar", "-C", ociDir, "-cf", ociTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tagDir := filepath.Join(dir, "tag-only")
	writeLayout(tagDir, dirImg, map[string]string{"org.opencontainers.image.ref.name": "v2"})
	unnamed := filepath.Join(dir, "unnamed")
	writeLayout(unnamed, dirImg, nil)

	dockerTar := filepath.Join(dir, "docker.tar")
	refs := map[name.Reference]v1.Image{}
	for _, tag := range []string{"example.com/kind-test/docker:a", "example.com/kind-test/docker:b"} {
		refs[must(name.NewTag(tag))] = dockerImg
	}
	if err := tarball.MultiRefWriteToFile(dockerTar, refs); err != nil {
		t.Fatal(err)
	}

	importCmd := func(args ...string) (string, error) {
		cmd := exec.Command(peapodBinary, append([]string{"image", "import", "--root", d.Root, "--state", d.State}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{ociTar}, []string{"registry.k8s.io/kind-test/oci:v1"}},
		{[]string{dockerTar}, []string{"example.com/kind-test/docker:a", "example.com/kind-test/docker:b"}},
		{[]string{"--name", "example.com/kind-test/dir", tagDir}, []string{"example.com/kind-test/dir:v2"}},
	} {
		out, err := importCmd(tc.args...)
		if err != nil {
			t.Fatalf("import %v: %v\n%s", tc.args, err, out)
		}
		for _, ref := range tc.want {
			if !strings.Contains(out, ref) {
				t.Errorf("import %v printed %q; want %s named", tc.args, out, ref)
			}
			st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err != nil || st.Image == nil {
				t.Fatalf("after import %v: ImageStatus(%s) = %v, %v; want the image", tc.args, ref, st, err)
			}
			if !strings.Contains(strings.Join(st.Image.RepoTags, " "), ref) {
				t.Errorf("ImageStatus(%s).RepoTags = %v", ref, st.Image.RepoTags)
			}
		}
	}
	images := func() int {
		l, err := d.Img.ListImages(c, &runtimeapi.ListImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Images)
	}
	if n := images(); n != 3 {
		t.Errorf("ListImages: %d images; want 3", n)
	}

	// Bad input: a clear error, nothing stored, nothing written outside.
	junk := filepath.Join(dir, "junk.tar")
	if err := os.WriteFile(junk, []byte("not a tar at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "evil.tar")
	writeTar(t, evil, [][2]string{{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`}, {"../escaped", "x"}})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{junk}, "not an OCI layout or docker-archive"},
		{[]string{filepath.Join(dir, "absent.tar")}, "not found"},
		{[]string{unnamed}, "give one with --name"},
		{[]string{tagDir}, `"v2" is only a tag`},
		{[]string{evil}, "leaves the archive"},
	} {
		out, err := importCmd(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("import %v = %v, %q; want a failure saying %q", tc.args, err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Root, "tmp", "escaped")); err == nil {
		t.Errorf("the archive wrote outside its directory: %s", filepath.Join(d.Root, "tmp", "escaped"))
	}
	if n := images(); n != 3 {
		t.Errorf("after the failed imports: %d images; want 3", n)
	}

	// The running daemon runs the imported image.
	logDir := t.TempDir()
	podCfg := podConfig("imported", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("imported", "registry.k8s.io/kind-test/oci:v1"))
	waitFor(t, 30*time.Second, "the imported image's container to exit", func() bool {
		st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if log, err := os.ReadFile(filepath.Join(logDir, "imported.log")); err != nil || !strings.Contains(string(log), "from-oci-archive") {
		t.Errorf("container log = %q, %v; want the image's own command's output", log, err)
	}
	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
}

// writeTar writes a tar of regular files: {name, content} in order.
func writeTar(t *testing.T, path string, files [][2]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, file := range files {
		if err := tw.WriteHeader(&tar.Header{Name: file[0], Mode: 0o644, Size: int64(len(file[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(file[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
