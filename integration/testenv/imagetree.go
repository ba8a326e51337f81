package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageBuilder builds the images a conformance suite pulls (critest, the
// node e2e suite) offline, as rootfs trees on one busybox base layer, and
// pushes them to a registry. Every failure is fatal to the test.
type ImageBuilder struct {
	t       testing.TB
	dir     string // where the trees are written
	reg     string
	baseDir string
	base    v1.Layer
}

// NewImageBuilder prepares the base: BusyboxRootfs with every busybox
// applet hard-linked into /bin (the suites run top, pidof, netstat, ...),
// plus files (path -> content, executable when it starts with #!) for
// what busybox lacks. Images are pushed to reg.
func NewImageBuilder(t testing.TB, reg string, files map[string]string) *ImageBuilder {
	b := &ImageBuilder{t: t, dir: t.TempDir(), reg: reg}
	b.baseDir = b.baseRootfs(files)
	b.base = b.Layer(b.baseDir)
	return b
}

// BaseFile is the content of the base's file rel (e.g. "etc/passwd"), for
// images that extend it.
func (b *ImageBuilder) BaseFile(rel string) string {
	data, err := os.ReadFile(filepath.Join(b.baseDir, rel))
	if err != nil {
		b.t.Fatal(err)
	}
	return string(data)
}

func (b *ImageBuilder) baseRootfs(files map[string]string) string {
	dir := filepath.Join(b.dir, "base")
	if out, err := exec.Command("cp", "-a", BusyboxRootfs(b.t), dir).CombinedOutput(); err != nil {
		b.t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	bb := filepath.Join(dir, "bin/busybox")
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		b.t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		p := filepath.Join(dir, "bin", applet)
		if _, err := os.Lstat(p); os.IsNotExist(err) && applet != "busybox" {
			// Hard links, so masking one applet (critest masks /bin/ls)
			// leaves the others working.
			if err := os.Link(bb, p); err != nil {
				b.t.Fatal(err)
			}
		}
	}
	for p := range files {
		// Never write through a hard link to busybox.
		if err := os.Remove(filepath.Join(dir, p)); err != nil && !os.IsNotExist(err) {
			b.t.Fatal(err)
		}
	}
	writeTree(b.t, dir, files)
	return dir
}

// Tree writes files (path -> content; executable when it starts with #!)
// into a fresh directory named name and returns it.
func (b *ImageBuilder) Tree(name string, files map[string]string) string {
	dir := filepath.Join(b.dir, name)
	writeTree(b.t, dir, files)
	return dir
}

func writeTree(t testing.TB, dir string, files map[string]string) {
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// nnpSource is e2e-test-images/nonewprivs (nnp.go upstream): installed
// setuid root, it prints its effective uid, so the suite sees whether
// no_new_privs blocked the escalation.
const nnpSource = `#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
`

// NNPTree compiles nnp (dynamic: the base has glibc) into
// /usr/local/bin/nnp, setuid root.
func (b *ImageBuilder) NNPTree() string {
	dir := filepath.Join(b.dir, "nnp")
	if err := os.MkdirAll(filepath.Join(dir, "usr/local/bin"), 0o755); err != nil {
		b.t.Fatal(err)
	}
	src := filepath.Join(b.dir, "nnp.c")
	if err := os.WriteFile(src, []byte(nnpSource), 0o644); err != nil {
		b.t.Fatal(err)
	}
	bin := filepath.Join(dir, "usr/local/bin/nnp")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		b.t.Fatalf("gcc nnp: %v: %s", err, out)
	}
	if err := os.Chmod(bin, 0o755|os.ModeSetuid); err != nil {
		b.t.Fatal(err)
	}
	return dir
}

// ExtractDebs is ExtractDebs into the builder's directory.
func (b *ImageBuilder) ExtractDebs(pkgs ...string) string {
	return ExtractDebs(b.t, b.dir, pkgs...)
}

// BinsLayer holds the binaries bins (paths inside debs, a tree from
// ExtractDebs) and the libraries they link beyond the base's.
func (b *ImageBuilder) BinsLayer(name, debs string, bins ...string) v1.Layer {
	dir := filepath.Join(b.dir, name)
	b.copyBins(name, dir, debs, bins...)
	return b.Layer(dir)
}

func (b *ImageBuilder) copyBins(name, dir, debs string, bins ...string) {
	var dsts []string
	for _, bin := range bins {
		dst := filepath.Join(dir, bin)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			b.t.Fatal(err)
		}
		if out, err := exec.Command("cp", filepath.Join(debs, bin), dst).CombinedOutput(); err != nil {
			b.t.Fatalf("cp %s: %v: %s", bin, err, out)
		}
		dsts = append(dsts, dst)
	}
	if err := CopyLibs(dir, debs, []string{b.baseDir}, dsts...); err != nil {
		b.t.Fatalf("%s libraries: %v", name, err)
	}
}

// nginxConf is what the suites expect of the nginx e2e image: a process
// named nginx, /var/run/nginx.pid, the default page served on the port
// (%d), "master process" in /proc/1/cmdline.
const nginxConf = `user www-data;
worker_processes 1;
error_log stderr notice;
pid /var/run/nginx.pid;
events { worker_connections 64; }
http {
    types { text/html html; }
    access_log /dev/stdout;
    server {
        listen %d;
        location / { root /usr/share/nginx/html; index index.html; }
    }
}
`

// NginxDebs are the Debian packages NginxLayer takes its files from.
var NginxDebs = []string{"nginx", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g"}

// NginxLayer holds Debian's nginx (from debs, ExtractDebs of NginxDebs),
// the libraries it links beyond the base's glibc, and a config that serves
// the default page on port.
func (b *ImageBuilder) NginxLayer(debs string, port int) v1.Layer {
	dir := b.Tree(fmt.Sprintf("nginx-%d", port), map[string]string{
		"etc/nginx/nginx.conf":            fmt.Sprintf(nginxConf, port),
		"usr/share/nginx/html/index.html": "<html><body><h1>Welcome to nginx!</h1></body></html>\n",
	})
	for _, d := range []string{"var/log/nginx", "var/lib/nginx"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.t.Fatal(err)
		}
	}
	b.copyBins("nginx", dir, debs, "usr/sbin/nginx")
	return b.Layer(dir)
}

// Layer is dir's contents as an image layer.
func (b *ImageBuilder) Layer(dir string) v1.Layer {
	l, err := LayerFromDir(dir)
	if err != nil {
		b.t.Fatalf("layer from %s: %v", dir, err)
	}
	return l
}

// Image stacks extra layers on the base layer. Unlike BuildImage's, the
// config has no creation time and the architecture is amd64, as the
// upstream images the suites pull.
func (b *ImageBuilder) Image(c ImageConfig, extra ...v1.Layer) v1.Image {
	cf := &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Config: c.config(),
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		b.t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, append([]v1.Layer{b.base}, extra...)...); err != nil {
		b.t.Fatal(err)
	}
	return img
}

// PushIndex writes img under each tag (a repository path below the
// registry) as a single-platform index, as upstream publishes most e2e
// images.
func (b *ImageBuilder) PushIndex(img v1.Image, tags ...string) {
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	for _, tag := range tags {
		if err := remote.WriteIndex(b.ref(tag), idx); err != nil {
			b.t.Fatalf("push %s: %v", tag, err)
		}
	}
}

// PushManifest writes img under each tag as a plain manifest.
func (b *ImageBuilder) PushManifest(img v1.Image, tags ...string) {
	for _, tag := range tags {
		if err := remote.Write(b.ref(tag), img); err != nil {
			b.t.Fatalf("push %s: %v", tag, err)
		}
	}
}

func (b *ImageBuilder) ref(tag string) name.Reference {
	ref, err := name.ParseReference(b.reg+"/"+tag, name.Insecure)
	if err != nil {
		b.t.Fatal(err)
	}
	return ref
}
