package e2enode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// L is its arguments as a slice: the layers of an image.
func L(layers ...v1.Layer) []v1.Layer { return layers }

// The images the [NodeConformance] specs pull (k8s.io/kubernetes
// test/utils/image/manifest.go at v1.37.2), built offline: repository paths
// equal the upstream ones below registry.k8s.io, so a registry mirror
// resolves the suite's names unchanged. What each stands in for is beside
// it; the base is Debian's busybox with every applet linked.

// debs are the Debian packages the images take files from; fetched (and
// cached) before the private network namespace, which has no way out.
var debs = append(slices.Clone(testenv.NginxDebs), "util-linux", "libsmartcols1", "libtinfo6", "netcat-traditional", "bash", "hostname",
	// curl and the libraries it links (agnhost's lifecycle hooks curl).
	"curl", "libcurl4", "libbrotli1", "libcom-err2", "libffi8", "libgmp10", "libgnutls30", "libgssapi-krb5-2",
	"libhogweed6", "libidn2-0", "libk5crypto3", "libkeyutils1", "libkrb5-3", "libkrb5support0", "libldap-2.5-0",
	"libnettle8", "libnghttp2-14", "libp11-kit0", "libpsl5", "librtmp1", "libsasl2-2", "libssh2-1", "libtasn1-6",
	"libunistring2", "libzstd1")

// pushImages builds every image and pushes it to reg. agnhost is the
// binary built from k8s.io/kubernetes/test/images/agnhost (CGO_ENABLED=0),
// pause the one from its build/pause/linux/pause.c.
func pushImages(t *testing.T, reg, agnhost, pause string) {
	b := testenv.NewImageBuilder(t, reg, nil)
	sh := testenv.ImageConfig{Cmd: []string{"sh"}}
	// push pushes one image per tag, told apart by a label, as upstream's
	// tags are distinct images. Were they one image, a runtime naming a
	// container's image by a name of it (containerd: the first) could
	// report another tag than the pod's, which "image is updated" specs
	// compare.
	push := func(c testenv.ImageConfig, layers []v1.Layer, tags ...string) {
		for _, tag := range tags {
			c.Labels = map[string]string{"org.opencontainers.image.ref.name": tag}
			b.PushIndex(b.Image(c, layers...), tag)
		}
	}

	// What upstream's busybox has and Debian's lacks, in busybox and in
	// agnhost (built on busybox upstream): the nmeter applet, and an nc
	// with -u (the networking specs' `echo hostName | nc -w 1 -u IP PORT`
	// from the host-network agnhost pod): netcat-traditional's, whose -w
	// waits for the reply after stdin's end as busybox's does.
	x := b.ExtractDebs(debs...)
	if err := os.Symlink("nc.traditional", filepath.Join(x, "bin/nc")); err != nil {
		t.Fatal(err)
	}
	nc := b.BinsLayer("nc", x, "bin/nc") // cp follows the link: a file /bin/nc
	nmeter := b.Layer(nmeterTree(t, t.TempDir()))
	push(sh, L(nmeter, nc), "e2e-test-images/busybox:1.37.0-2", "e2e-test-images/busybox:1.36.1-1", "e2e-test-images/busybox:1.29-4")
	push(testenv.ImageConfig{Cmd: []string{"sh"}, User: "1234"}, nil, "e2e-test-images/nonroot:1.5", "e2e-test-images/nonroot:1.4")
	// pause: the suite runs it as a container of its own in a few specs;
	// upstream's binary, which exits on SIGTERM (a `sleep infinity` as
	// PID 1 ignores it and a prestop sleep spec waited for the SIGKILL).
	pauseTree := filepath.Join(t.TempDir(), "pause")
	if err := os.Mkdir(pauseTree, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", pause, filepath.Join(pauseTree, "pause")).CombinedOutput(); err != nil {
		t.Fatalf("copy pause: %v: %s", err, out)
	}
	push(testenv.ImageConfig{Entrypoint: []string{"/pause"}}, L(b.Layer(pauseTree)), "pause:3.10.2", "pause:3.10.1", "pause:3.10")

	// agnhost as upstream's Dockerfile lays it out: /agnhost and the
	// agnhost-2 link (entrypoint specs), /uploads (netexec), user 1000 in
	// group 50000 (supplemental-groups specs), ENTRYPOINT agnhost, CMD pause.
	ag := b.Tree("agnhost", map[string]string{
		"etc/passwd":      b.BaseFile("etc/passwd") + "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
		"etc/group":       b.BaseFile("etc/group") + "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
		"uploads/.keep":   "",
		"home/.keep":      "",
		"etc/agnhost.txt": "agnhost built from k8s.io/kubernetes/test/images/agnhost\n",
	})
	// Beside the binary: the TLS pair upstream's image has at /
	// (test/images/agnhost/porter/localhost.*).
	for _, f := range []string{"agnhost", "localhost.crt", "localhost.key"} {
		if out, err := exec.Command("cp", filepath.Join(filepath.Dir(agnhost), f), filepath.Join(ag, f)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v: %s", f, err, out)
		}
	}
	if err := os.Symlink("agnhost", filepath.Join(ag, "agnhost-2")); err != nil {
		t.Fatal(err)
	}
	agLayer := b.Layer(ag)
	agCfg := testenv.ImageConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}
	// Upstream's agnhost adds curl and bash to its base (exec lifecycle
	// hooks run `curl http://IP:8080/echo?msg=poststart` in it; probe
	// specs run /bin/bash).
	tools := b.BinsLayer("agnhost-tools", x, "usr/bin/curl", "bin/bash")
	push(agCfg, L(nmeter, nc, tools, agLayer), "e2e-test-images/agnhost:2.66.1", "e2e-test-images/agnhost:2.55")
	// kitten and nautilus: agnhost serving a picture (image-pull specs
	// tell them apart by content).
	for _, pic := range []string{"kitten", "nautilus"} {
		files := b.Layer(b.Tree(pic, map[string]string{pic + ".jpg": pic + "\n", "data.json": fmt.Sprintf("{\"image\": %q}\n", pic)}))
		push(testenv.ImageConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}}, L(nmeter, nc, tools, agLayer, files),
			"e2e-test-images/"+pic+":1.8", "e2e-test-images/"+pic+":1.9")
	}

	nginx := testenv.ImageConfig{Cmd: []string{"nginx", "-g", "daemon off;"}, StopSignal: "SIGQUIT"}
	push(nginx, L(b.NginxLayer(x, 80)), "e2e-test-images/nginx:1.27.0-2", "e2e-test-images/nginx:1.28.0-2")
	push(testenv.ImageConfig{Cmd: []string{"nnp"}}, L(b.Layer(b.NNPTree())), "e2e-test-images/nonewprivs:1.4", "e2e-test-images/nonewprivs:1.3")
	// glibc-dns-testing (upstream: Debian with dnsutils): the hostname
	// specs run `hostname; hostname -f`, Debian's hostname, whose -f asks
	// glibc, which reads the pod's /etc/hosts first (Debian's nsswitch).
	dnsTree := b.Tree("glibc-dns-testing", map[string]string{"etc/nsswitch.conf": "hosts: files dns\n"})
	dnsTools := b.BinsLayer("glibc-dns-testing-bins", x, "bin/hostname")
	push(sh, L(b.Layer(dnsTree), dnsTools), "e2e-test-images/glibc-dns-testing:2.1.1")
	// ipc-utils: util-linux's ipcmk/ipcs/ipcrm (host IPC specs).
	push(sh, L(b.BinsLayer("ipc-utils", x, "usr/bin/ipcmk", "usr/bin/ipcs", "usr/bin/ipcrm")), "e2e-test-images/ipc-utils:1.4")
}
