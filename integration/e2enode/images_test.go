package e2enode

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

	"github.com/peapod-cri/peapod/integration/testenv"
)

// The images the [NodeConformance] specs pull (k8s.io/kubernetes
// test/utils/image/manifest.go at v1.37.2), built offline: repository paths
// equal the upstream ones below registry.k8s.io, so a registry mirror
// resolves the suite's names unchanged. What each stands in for is beside
// it; the base is Debian's busybox with every applet linked.

// debs are the Debian packages the images take files from; fetched (and
// cached) before the private network namespace, which has no way out.
var debs = []string{"nginx", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g", "util-linux", "libsmartcols1", "libtinfo6"}

// nginx as the upstream e2e image: port 80, the default page.
const nginxConf = `user www-data;
worker_processes 1;
error_log stderr notice;
pid /var/run/nginx.pid;
events { worker_connections 64; }
http {
    types { text/html html; }
    access_log /dev/stdout;
    server {
        listen 80;
        location / { root /usr/share/nginx/html; index index.html; }
    }
}
`

// nnp is e2e-test-images/nonewprivs (nnp.go upstream): setuid root, it
// prints its effective uid.
const nnpSource = `#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
`

type imageBuilder struct {
	t    *testing.T
	dir  string
	reg  string
	base v1.Layer
}

// pushImages builds every image and pushes it to reg. agnhost is the
// binary built from k8s.io/kubernetes/test/images/agnhost (CGO_ENABLED=0).
func pushImages(t *testing.T, reg, agnhost string) {
	b := &imageBuilder{t: t, dir: t.TempDir(), reg: reg}
	baseDir := b.baseRootfs()
	b.base = b.layer(baseDir)
	sh := imageConfig{cmd: []string{"sh"}}

	b.push(b.image(sh), "e2e-test-images/busybox:1.37.0-2", "e2e-test-images/busybox:1.36.1-1", "e2e-test-images/busybox:1.29-4")
	b.push(b.image(imageConfig{cmd: []string{"sh"}, user: "1234"}), "e2e-test-images/nonroot:1.5", "e2e-test-images/nonroot:1.4")
	// pause: the suite runs it as a container of its own in a few specs.
	b.push(b.image(imageConfig{entrypoint: []string{"/bin/sleep", "infinity"}}), "pause:3.10.2", "pause:3.10.1", "pause:3.10")

	// agnhost as upstream's Dockerfile lays it out: /agnhost and the
	// agnhost-2 link (entrypoint specs), /uploads (netexec), user 1000 in
	// group 50000 (supplemental-groups specs), ENTRYPOINT agnhost, CMD pause.
	passwd, err := os.ReadFile(filepath.Join(baseDir, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	group, err := os.ReadFile(filepath.Join(baseDir, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	ag := b.tree("agnhost", map[string]string{
		"etc/passwd":      string(passwd) + "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
		"etc/group":       string(group) + "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
		"uploads/.keep":   "",
		"home/.keep":      "",
		"etc/agnhost.txt": "agnhost built from k8s.io/kubernetes/test/images/agnhost\n",
	})
	if out, err := exec.Command("cp", agnhost, filepath.Join(ag, "agnhost")).CombinedOutput(); err != nil {
		t.Fatalf("copy agnhost: %v: %s", err, out)
	}
	if err := os.Symlink("agnhost", filepath.Join(ag, "agnhost-2")); err != nil {
		t.Fatal(err)
	}
	agLayer := b.layer(ag)
	agCfg := imageConfig{entrypoint: []string{"/agnhost"}, cmd: []string{"pause"}}
	b.push(b.image(agCfg, agLayer), "e2e-test-images/agnhost:2.66.1", "e2e-test-images/agnhost:2.55")
	// kitten and nautilus: agnhost serving a picture (image-pull specs
	// tell them apart by content).
	for _, pic := range []string{"kitten", "nautilus"} {
		files := b.layer(b.tree(pic, map[string]string{pic + ".jpg": pic + "\n", "data.json": fmt.Sprintf("{\"image\": %q}\n", pic)}))
		b.push(b.image(imageConfig{entrypoint: []string{"/agnhost"}, cmd: []string{"test-webserver"}}, agLayer, files),
			"e2e-test-images/"+pic+":1.8", "e2e-test-images/"+pic+":1.9")
	}

	x := testenv.ExtractDebs(t, b.dir, debs...)
	nginx := imageConfig{cmd: []string{"nginx", "-g", "daemon off;"}, stopSignal: "SIGQUIT"}
	b.push(b.image(nginx, b.nginxLayer(x, baseDir)), "e2e-test-images/nginx:1.27.0-2", "e2e-test-images/nginx:1.28.0-2")
	b.push(b.image(imageConfig{cmd: []string{"nnp"}}, b.layer(b.nnpTree())), "e2e-test-images/nonewprivs:1.4", "e2e-test-images/nonewprivs:1.3")
	// ipc-utils: util-linux's ipcmk/ipcs/ipcrm (host IPC specs).
	b.push(b.image(sh, b.binsLayer("ipc-utils", x, baseDir, "usr/bin/ipcmk", "usr/bin/ipcs", "usr/bin/ipcrm")), "e2e-test-images/ipc-utils:1.4")
}

// baseRootfs is testenv's busybox rootfs with every busybox applet linked
// into /bin.
func (b *imageBuilder) baseRootfs() string {
	dir := filepath.Join(b.dir, "base")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(b.t), dir).CombinedOutput(); err != nil {
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
			if err := os.Link(bb, p); err != nil {
				b.t.Fatal(err)
			}
		}
	}
	return dir
}

// tree writes files (executable when the content starts with #!) into a
// fresh directory.
func (b *imageBuilder) tree(name string, files map[string]string) string {
	dir := filepath.Join(b.dir, name)
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			b.t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			b.t.Fatal(err)
		}
	}
	return dir
}

func (b *imageBuilder) nnpTree() string {
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

// binsLayer copies the binaries bins (paths inside the extracted debs x)
// and the libraries they need beyond the base image's.
func (b *imageBuilder) binsLayer(name, x, baseDir string, bins ...string) v1.Layer {
	dir := filepath.Join(b.dir, name)
	var dsts []string
	for _, bin := range bins {
		dst := filepath.Join(dir, bin)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			b.t.Fatal(err)
		}
		if out, err := exec.Command("cp", filepath.Join(x, bin), dst).CombinedOutput(); err != nil {
			b.t.Fatalf("cp %s: %v: %s", bin, err, out)
		}
		dsts = append(dsts, dst)
	}
	if err := testenv.CopyLibs(dir, x, []string{baseDir}, dsts...); err != nil {
		b.t.Fatalf("%s libraries: %v", name, err)
	}
	return b.layer(dir)
}

func (b *imageBuilder) nginxLayer(x, baseDir string) v1.Layer {
	dir := b.tree("nginx", map[string]string{
		"etc/nginx/nginx.conf":            nginxConf,
		"usr/share/nginx/html/index.html": "<html><body><h1>Welcome to nginx!</h1></body></html>\n",
	})
	for _, d := range []string{"var/log/nginx", "var/lib/nginx", "usr/sbin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "usr/sbin/nginx")
	if out, err := exec.Command("cp", filepath.Join(x, "usr/sbin/nginx"), bin).CombinedOutput(); err != nil {
		b.t.Fatalf("cp nginx: %v: %s", err, out)
	}
	if err := testenv.CopyLibs(dir, x, []string{baseDir}, bin); err != nil {
		b.t.Fatalf("nginx libraries: %v", err)
	}
	return b.layer(dir)
}

func (b *imageBuilder) layer(dir string) v1.Layer {
	l, err := testenv.LayerFromDir(dir)
	if err != nil {
		b.t.Fatalf("layer from %s: %v", dir, err)
	}
	return l
}

type imageConfig struct {
	entrypoint, cmd  []string
	user, stopSignal string
}

// image stacks extra layers on the base layer.
func (b *imageBuilder) image(c imageConfig, extra ...v1.Layer) v1.Image {
	cf := &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Config: v1.Config{
			Env: []string{testenv.DefaultPath}, Entrypoint: c.entrypoint, Cmd: c.cmd,
			User: c.user, StopSignal: c.stopSignal,
		},
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

// push writes img under each tag as a single-platform index, as upstream
// publishes these.
func (b *imageBuilder) push(img v1.Image, tags ...string) {
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	for _, tag := range tags {
		ref, err := name.ParseReference(b.reg+"/"+tag, name.Insecure)
		if err != nil {
			b.t.Fatal(err)
		}
		if err := remote.WriteIndex(ref, idx); err != nil {
			b.t.Fatalf("push %s: %v", ref, err)
		}
	}
}
