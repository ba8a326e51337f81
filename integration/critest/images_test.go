package critest

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

// The images critest pulls, built offline. Repository paths equal the
// upstream ones (registry.k8s.io/e2e-test-images/busybox is pushed as
// e2e-test-images/busybox), so a registry mirror resolves critest's names
// unchanged. What each spec expects of an image is listed beside it.

// pgrep and ipcs stand-ins: Debian's busybox has neither applet, critest
// runs both ("pgrep sleep", "ipcs -m").
const pgrepScript = `#!/bin/sh
# pgrep PATTERN: PIDs whose process name contains PATTERN.
[ $# -ge 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
rc=1
for d in /proc/[0-9]*; do
  c=$(cat "$d/comm" 2>/dev/null) || continue
  case "$c" in *"$1"*) echo "${d#/proc/}"; rc=0 ;; esac
done
exit $rc
`

const ipcsScript = `#!/bin/sh
# ipcs -m: the shared memory segments of this IPC namespace.
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read key shmid perms size cpid lpid nattch uid rest; do
  printf "0x%08x %-10s %-10s %-10s %-10s %-10s\n" "$key" "$shmid" "$uid" "$perms" "$size" "$nattch"
done
`

// nnp is registry.k8s.io/e2e-test-images/nonewprivs: installed setuid root,
// it prints its effective uid, so critest sees whether no_new_privs blocked
// the escalation.
const nnpSource = `#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
`

// The httpd image: busybox httpd; critest wants port 80 and "httpd" in the log.
const httpdForeground = `#!/bin/sh
echo "httpd: busybox httpd serving /usr/local/apache2/htdocs on :80" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
`

// nginx: critest wants port 80 (12003 for the host-network image) to answer
// 200, a process named nginx, /var/run/nginx.pid, and "master process" in
// /proc/1/cmdline.
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

// imageBuilder writes rootfs trees under dir and pushes images to reg.
type imageBuilder struct {
	t    *testing.T
	dir  string
	reg  string
	base v1.Layer
}

// pushCritestImages builds and pushes every image critest's validation
// suite pulls.
func pushCritestImages(t *testing.T, reg string) {
	b := &imageBuilder{t: t, dir: t.TempDir(), reg: reg}
	baseDir := b.baseRootfs()
	b.base = b.layer(baseDir)
	sh := imageConfig{cmd: []string{"sh"}}

	busybox := b.image(sh)
	b.push(busybox, true, "e2e-test-images/busybox:1.29-2")
	// critest --benchmark lists these; harmless extra tags otherwise.
	b.push(busybox, true, "docker/library/busybox:1", "docker/library/busybox:1-glibc",
		"docker/library/busybox:1-musl", "docker/library/busybox:1-uclibc", "docker/library/busybox:1.35.0-glibc")

	nginxDebs := testenv.ExtractDebs(t, b.dir, "nginx", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g")
	nginx := imageConfig{cmd: []string{"nginx", "-g", "daemon off;"}, stopSignal: "SIGQUIT"}
	b.push(b.image(nginx, b.nginxLayer(nginxDebs, baseDir, 80)), true, "e2e-test-images/nginx:1.14-2")
	b.push(b.image(nginx, b.nginxLayer(nginxDebs, baseDir, 12003)), false, "k8s-staging-cri-tools/hostnet-nginx-amd64:latest")

	httpd := b.tree("httpd", map[string]string{
		"usr/local/apache2/htdocs/index.html": "<html><body><h1>It works!</h1></body></html>\n",
		"usr/local/bin/httpd-foreground":      httpdForeground,
	})
	b.push(b.image(imageConfig{cmd: []string{"httpd-foreground"}, workdir: "/usr/local/apache2"}, b.layer(httpd)),
		true, "e2e-test-images/httpd:2.4.39-4")

	b.push(b.image(imageConfig{entrypoint: []string{"/usr/local/bin/nnp"}}, b.layer(b.nnpTree())),
		true, "e2e-test-images/nonewprivs:1.3")

	// registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 are the same
	// repository here, so critest sees one image ID from two registries.
	// peapod needs no pause image itself; critest only pulls this one.
	b.push(b.image(imageConfig{entrypoint: []string{"/bin/sleep", "infinity"}, labels: map[string]string{"role": "pause"}},
		b.layer(b.tree("pause", map[string]string{"pause": ""}))), true, "pause:3.9")

	// ImageStatus must report the image's USER as uid or username.
	for repo, user := range map[string]string{
		"test-image-user-uid": "1002", "test-image-user-username": "www-data",
		"test-image-user-uid-group": "1003:1004", "test-image-user-username-group": "www-data:1004",
	} {
		b.push(b.image(imageConfig{cmd: []string{"sh"}, user: user}), false, "k8s-staging-cri-tools/"+repo+":latest")
	}
	// USER 1000, a member of group 50000 through the image's /etc/group.
	group, err := os.ReadFile(filepath.Join(baseDir, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile(filepath.Join(baseDir, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	pg := b.tree("predefined-group", map[string]string{
		"etc/passwd": string(passwd) + "default-user:x:1000:1000::/home/default-user:/bin/sh\n",
		"etc/group":  string(group) + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
	})
	b.push(b.image(imageConfig{cmd: []string{"sh"}, user: "1000"}, b.layer(pg)), false,
		"k8s-staging-cri-tools/test-image-predefined-group:latest")

	// Distinct images (one marker file each). test-image-digest is pulled by
	// a fixed upstream digest that no offline build can reproduce; the tag is
	// pushed all the same.
	marked := func(marker string) v1.Image {
		return b.image(sh, b.layer(b.tree("marker-"+marker, map[string]string{marker: ""})))
	}
	for _, n := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest", "test-image-digest"} {
		b.push(marked(n), false, "k8s-staging-cri-tools/"+n+":latest")
	}
	b.push(marked("same-image"), true, "k8s-staging-cri-tools/test-image-tags:1",
		"k8s-staging-cri-tools/test-image-tags:2", "k8s-staging-cri-tools/test-image-tags:3")
	b.push(marked("tag-test"), true, "k8s-staging-cri-tools/test-image-tag:test")
	b.push(marked("tag-all"), true, "k8s-staging-cri-tools/test-image-tag:all")
}

// baseRootfs is testenv's busybox rootfs with every busybox applet linked
// into /bin (critest runs top, pidof, brctl, netstat, ...) and the
// pgrep/ipcs stand-ins.
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
			// Hard links, so masking one applet (critest masks /bin/ls)
			// leaves the others working.
			if err := os.Link(bb, p); err != nil {
				b.t.Fatal(err)
			}
		}
	}
	for applet, script := range map[string]string{"pgrep": pgrepScript, "ipcs": ipcsScript} {
		if err := os.WriteFile(filepath.Join(dir, "bin", applet), []byte(script), 0o755); err != nil {
			b.t.Fatal(err)
		}
	}
	return dir
}

// tree writes files (path -> content; executable when it starts with #!)
// into a fresh directory and returns it.
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

// nnpTree compiles nnp (dynamic: the base image has glibc) and installs it
// setuid root.
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

// nginxLayer holds Debian's nginx, the libraries it links beyond the base
// image's glibc, and a config that listens on port.
func (b *imageBuilder) nginxLayer(debs, baseDir string, port int) v1.Layer {
	dir := b.tree(fmt.Sprintf("nginx-%d", port), map[string]string{
		"etc/nginx/nginx.conf":            fmt.Sprintf(nginxConf, port),
		"usr/share/nginx/html/index.html": "<html><body><h1>Welcome to nginx!</h1></body></html>\n",
	})
	for _, d := range []string{"var/log/nginx", "var/lib/nginx", "usr/sbin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "usr/sbin/nginx")
	if out, err := exec.Command("cp", filepath.Join(debs, "usr/sbin/nginx"), bin).CombinedOutput(); err != nil {
		b.t.Fatalf("cp nginx: %v: %s", err, out)
	}
	if err := testenv.CopyLibs(dir, debs, []string{baseDir}, bin); err != nil {
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
	entrypoint, cmd []string
	user, workdir   string
	stopSignal      string
	labels          map[string]string
}

// image stacks extra layers on the base layer.
func (b *imageBuilder) image(c imageConfig, extra ...v1.Layer) v1.Image {
	cf := &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Config: v1.Config{
			Env: []string{testenv.DefaultPath}, Entrypoint: c.entrypoint, Cmd: c.cmd,
			User: c.user, WorkingDir: c.workdir, StopSignal: c.stopSignal, Labels: c.labels,
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

// push writes img under each tag, as a single-platform index (as upstream
// publishes most of these) or as a plain manifest.
func (b *imageBuilder) push(img v1.Image, index bool, tags ...string) {
	for _, tag := range tags {
		ref, err := name.ParseReference(b.reg+"/"+tag, name.Insecure)
		if err != nil {
			b.t.Fatal(err)
		}
		if index {
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList),
				mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
			err = remote.WriteIndex(ref, idx)
		} else {
			err = remote.Write(ref, img)
		}
		if err != nil {
			b.t.Fatalf("push %s: %v", ref, err)
		}
	}
}
