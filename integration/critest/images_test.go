package critest

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

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

// The httpd image: busybox httpd; critest wants port 80 and "httpd" in the log.
const httpdForeground = `#!/bin/sh
echo "httpd: busybox httpd serving /usr/local/apache2/htdocs on :80" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
`

// pushCritestImages builds and pushes every image critest's validation
// suite pulls.
func pushCritestImages(t *testing.T, reg string) {
	b := testenv.NewImageBuilder(t, reg, map[string]string{"bin/pgrep": pgrepScript, "bin/ipcs": ipcsScript})
	sh := testenv.ImageConfig{Cmd: []string{"sh"}}

	busybox := b.Image(sh)
	b.PushIndex(busybox, "e2e-test-images/busybox:1.29-2")
	// critest --benchmark lists these; harmless extra tags otherwise.
	b.PushIndex(busybox, "docker/library/busybox:1", "docker/library/busybox:1-glibc",
		"docker/library/busybox:1-musl", "docker/library/busybox:1-uclibc", "docker/library/busybox:1.35.0-glibc")

	// nginx: critest wants port 80 (12003 for the host-network image) to
	// answer 200 (testenv's NginxLayer has the rest).
	nginxDebs := b.ExtractDebs(testenv.NginxDebs...)
	nginx := testenv.ImageConfig{Cmd: []string{"nginx", "-g", "daemon off;"}, StopSignal: "SIGQUIT"}
	b.PushIndex(b.Image(nginx, b.NginxLayer(nginxDebs, 80)), "e2e-test-images/nginx:1.14-2")
	b.PushManifest(b.Image(nginx, b.NginxLayer(nginxDebs, 12003)), "k8s-staging-cri-tools/hostnet-nginx-amd64:latest")

	httpd := b.Tree("httpd", map[string]string{
		"usr/local/apache2/htdocs/index.html": "<html><body><h1>It works!</h1></body></html>\n",
		"usr/local/bin/httpd-foreground":      httpdForeground,
	})
	b.PushIndex(b.Image(testenv.ImageConfig{Cmd: []string{"httpd-foreground"}, WorkingDir: "/usr/local/apache2"}, b.Layer(httpd)),
		"e2e-test-images/httpd:2.4.39-4")

	b.PushIndex(b.Image(testenv.ImageConfig{Entrypoint: []string{"/usr/local/bin/nnp"}}, b.Layer(b.NNPTree())),
		"e2e-test-images/nonewprivs:1.3")

	// registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 are the same
	// repository here, so critest sees one image ID from two registries.
	// peapod needs no pause image itself; critest only pulls this one.
	b.PushIndex(b.Image(testenv.ImageConfig{Entrypoint: []string{"/bin/sleep", "infinity"}, Labels: map[string]string{"role": "pause"}},
		b.Layer(b.Tree("pause", map[string]string{"pause": ""}))), "pause:3.9")

	// ImageStatus must report the image's USER as uid or username.
	for repo, user := range map[string]string{
		"test-image-user-uid": "1002", "test-image-user-username": "www-data",
		"test-image-user-uid-group": "1003:1004", "test-image-user-username-group": "www-data:1004",
	} {
		b.PushManifest(b.Image(testenv.ImageConfig{Cmd: []string{"sh"}, User: user}), "k8s-staging-cri-tools/"+repo+":latest")
	}
	// USER 1000, a member of group 50000 through the image's /etc/group.
	pg := b.Tree("predefined-group", map[string]string{
		"etc/passwd": b.BaseFile("etc/passwd") + "default-user:x:1000:1000::/home/default-user:/bin/sh\n",
		"etc/group":  b.BaseFile("etc/group") + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
	})
	b.PushManifest(b.Image(testenv.ImageConfig{Cmd: []string{"sh"}, User: "1000"}, b.Layer(pg)),
		"k8s-staging-cri-tools/test-image-predefined-group:latest")

	// Distinct images (one marker file each). test-image-digest is pulled by
	// a fixed upstream digest that no offline build can reproduce; the tag is
	// pushed all the same.
	marked := func(marker string) v1.Image {
		return b.Image(sh, b.Layer(b.Tree("marker-"+marker, map[string]string{marker: ""})))
	}
	for _, n := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest", "test-image-digest"} {
		b.PushManifest(marked(n), "k8s-staging-cri-tools/"+n+":latest")
	}
	b.PushIndex(marked("same-image"), "k8s-staging-cri-tools/test-image-tags:1",
		"k8s-staging-cri-tools/test-image-tags:2", "k8s-staging-cri-tools/test-image-tags:3")
	b.PushIndex(marked("tag-test"), "k8s-staging-cri-tools/test-image-tag:test")
	b.PushIndex(marked("tag-all"), "k8s-staging-cri-tools/test-image-tag:all")
}
