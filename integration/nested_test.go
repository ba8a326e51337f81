package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// The kind-style node: kind runs the kubelet and the runtime inside a
// privileged container. Here the outer peapod runs a privileged "node" pod
// whose image holds peapod (with nft and the libraries both need) and
// crictl; that inner peapod runs a pod of its own, with its cgroups nested
// under the node container's, its own bridge and pod range inside the node
// pod's network namespace, and its state on host directories mounted into
// the node (as kind mounts a volume at /var/lib/containerd: an overlay
// store cannot sit on the node's own overlay rootfs).
const (
	innerBridge = "inner0"
	innerCIDR   = "10.66.0.0/24"
	innerSocket = "unix:///run/peapod/peapod.sock"
)

func TestNestedNode(t *testing.T) {
	regAddr, image := testImage(t)
	testenv.PushImage(t, regAddr, "peapod/node:it", nodeRootfs(t), testenv.ImageConfig{
		Entrypoint: []string{"/usr/local/bin/peapod"},
	})
	d := newDaemon(t, regAddr)
	d.Start()

	// The node reaches the registry as a kind node reaches its mirror: over
	// its pod network. The registry listens on loopback only, so forward
	// from the outer bridge's gateway address to it.
	prefix := netip.MustParsePrefix(d.PodCIDR)
	mirror := forwardTCP(t, prefix.Addr().Next().String()+":0", regAddr)

	dir := t.TempDir()
	files := map[string]string{
		"registries.conf": fmt.Sprintf("[[registry]]\nlocation = \"registry.k8s.io\"\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", mirror),
		"pod.json": `{"metadata":{"name":"inner","namespace":"nested","uid":"inner-uid"},"hostname":"inner-host",` +
			`"log_directory":"/var/log/inner","linux":{}}`,
		"ctr.json": fmt.Sprintf(`{"metadata":{"name":"app"},"image":{"image":%q},`+
			`"command":["sh","-c","echo nested-ok; exec sleep 1000"],"log_path":"app.log"}`, image),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"var-lib-peapod", "run-peapod", "logs"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	nodeImage := "registry.k8s.io/peapod/node:it"
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: nodeImage}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("node", filepath.Join(dir, "logs"))
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
	pod := runPod(t, d, podCfg).PodSandboxId
	nodeCfg := containerConfig("node", nodeImage)
	nodeCfg.Args = []string{"--registries-conf", "/etc/peapod/registries.conf",
		"--bridge", innerBridge, "--pod-cidr", innerCIDR, "--log-level", "debug"}
	nodeCfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Privileged: true}}
	nodeCfg.Mounts = []*runtimeapi.Mount{
		{HostPath: filepath.Join(dir, "var-lib-peapod"), ContainerPath: "/var/lib/peapod"},
		{HostPath: filepath.Join(dir, "run-peapod"), ContainerPath: "/run/peapod"},
		{HostPath: filepath.Join(dir, "registries.conf"), ContainerPath: "/etc/peapod/registries.conf", Readonly: true},
		{HostPath: filepath.Join(dir, "pod.json"), ContainerPath: "/nested/pod.json", Readonly: true},
		{HostPath: filepath.Join(dir, "ctr.json"), ContainerPath: "/nested/ctr.json", Readonly: true},
	}
	node := startContainer(t, d, pod, podCfg, nodeCfg)
	defer func() {
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "logs", "node.log"))
			t.Logf("inner peapod log:\n%s", tail(string(logs), 40))
		}
	}()

	// crictl runs inside the node container, against the inner peapod.
	crictl := func(args ...string) (string, error) {
		cmd := append([]string{"crictl", "--runtime-endpoint", innerSocket, "--image-endpoint", innerSocket, "--timeout", "30s"}, args...)
		resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: node, Cmd: cmd, Timeout: 60})
		if err != nil {
			return "", err
		}
		if resp.ExitCode != 0 {
			return "", fmt.Errorf("exit %d: %s%s", resp.ExitCode, resp.Stdout, resp.Stderr)
		}
		return strings.TrimSpace(string(resp.Stdout)), nil
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := crictl(args...)
		if err != nil {
			t.Fatalf("crictl %s (in the node): %v", strings.Join(args, " "), err)
		}
		return out
	}
	nodeExec := func(cmd ...string) string {
		t.Helper()
		resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: node, Cmd: cmd, Timeout: 30})
		if err != nil || resp.ExitCode != 0 {
			t.Fatalf("%v in the node: %v %s%s", cmd, err, resp.GetStdout(), resp.GetStderr())
		}
		return strings.TrimSpace(string(resp.Stdout))
	}

	var lastErr error
	waitFor(t, 30*time.Second, "the inner peapod to answer", func() bool {
		_, lastErr = crictl("version")
		return lastErr == nil
	})
	t.Logf("inner peapod: %s", strings.ReplaceAll(must("version"), "\n", ", "))

	start := time.Now()
	must("pull", image)
	innerPod := must("runp", "/nested/pod.json")
	ctr := must("create", innerPod, "/nested/ctr.json", "/nested/pod.json")
	must("start", ctr)
	t.Logf("inner pull + pod + container in %s", time.Since(start).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the inner container's log line", func() bool {
		out, _ := crictl("logs", ctr)
		return strings.Contains(out, "nested-ok")
	})

	// Nested cgroups: on v1 there is no cgroup namespace, so the inner
	// container's /proc/self/cgroup shows the host path: the outer daemon's
	// parent, the node pod and container, then the inner peapod's "/peapod".
	cg := must("exec", ctr, "cat", "/proc/self/cgroup")
	memLine := ""
	for _, l := range strings.Split(cg, "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && (strings.Contains(parts[1], "memory") || parts[1] == "") {
			memLine = parts[2]
			if parts[1] != "" {
				break
			}
		}
	}
	outer := strings.Index(memLine, "/"+d.CgroupParent+"/")
	if outer < 0 || !strings.Contains(memLine[outer:], "/peapod/") {
		t.Errorf("inner container's cgroup %q is not nested below the outer parent %s and the inner /peapod", memLine, d.CgroupParent)
	} else {
		t.Logf("inner container's memory cgroup: %s", memLine)
	}

	// Its own bridge and range, inside the node's network namespace only.
	ip := must("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", innerPod)
	if a, err := netip.ParseAddr(ip); err != nil || !netip.MustParsePrefix(innerCIDR).Contains(a) {
		t.Errorf("inner pod IP %q is not in %s", ip, innerCIDR)
	}
	if out := nodeExec("ip", "-4", "-o", "addr", "show", innerBridge); !strings.Contains(out, "10.66.0.1/24") {
		t.Errorf("node's %s: %q", innerBridge, out)
	}
	if exec.Command("ip", "link", "show", innerBridge).Run() == nil {
		t.Errorf("bridge %s exists on the host: it belongs in the node's network namespace", innerBridge)
	}
	nodeExec("ping", "-c", "1", "-W", "5", ip) // node -> inner pod over the inner bridge
	t.Logf("inner pod %s on %s (%s), reachable from the node", ip, innerBridge, innerCIDR)

	// The inner peapod tears its pod down; then the node goes.
	must("stop", "-t", "5", ctr)
	must("rm", ctr)
	must("stopp", innerPod)
	must("rmp", innerPod)
	if out := must("pods", "-q"); out != "" {
		t.Errorf("inner pods left: %q", out)
	}
	if _, err := d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: node, Timeout: 15}); err != nil {
		t.Fatal(err)
	}
	st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: node})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.ExitCode != 0 {
		t.Errorf("inner peapod exited %d after SIGTERM", st.Status.ExitCode)
	}
}

// nodeRootfs builds the node image's tree: testenv's busybox, peapod, nft
// and the libraries they link (from Debian packages), and crictl.
func nodeRootfs(t *testing.T) string {
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	debs := testenv.ExtractDebs(t, dir, "libseccomp2", "nftables", "libnftables1", "libedit2", "libmnl0",
		"libnftnl11", "libxtables12", "libjansson4", "libgmp10", "libtinfo6", "libbsd0", "libmd0")
	bins := map[string]string{
		"usr/local/bin/peapod": peapodBinary,
		"usr/local/bin/crictl": buildCrictl(t),
		"usr/sbin/nft":         filepath.Join(debs, "usr/sbin/nft"),
	}
	var elfs []string
	for dst, src := range bins {
		p := filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", src, p).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v: %s", src, err, out)
		}
		elfs = append(elfs, p)
	}
	if err := testenv.CopyLibs(root, debs, nil, elfs...); err != nil {
		t.Fatalf("node image libraries: %v", err)
	}
	for _, d := range []string{"var/lib/peapod", "run/peapod", "var/log", "etc/peapod", "nested"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// forwardTCP accepts on listen and copies each connection to and from
// target, until the test ends. It returns the address it listens on.
func forwardTCP(t *testing.T, listen, target string) string {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("listen %s: %v", listen, err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				track(c, true)
				track(up, true)
				defer func() { c.Close(); up.Close(); track(c, false); track(up, false) }()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return l.Addr().String()
}
