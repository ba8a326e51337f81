package integration

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNetwork runs two pods on the built-in network: each gets an IP of
// the daemon's pod CIDR, pod B fetches from pod A's busybox httpd by IP (with nc: Debian's
// dynamic busybox wget crashes without NSS modules in the image),
// and pod A's hostPort answers on 127.0.0.1. Removing the pods leaves no
// veth and no host port.
func TestPodNetwork(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.start()
	c := ctx(t)
	if _, err := d.img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR(d.podCIDR)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	logA := t.TempDir()
	logDirs := map[string]string{"net-a": logA, "net-b": t.TempDir()}
	run := func(name string, ports []*runtimeapi.PortMapping, cmd ...string) (pod, ctr, ip string) {
		t.Helper()
		cfg := podConfig(name, logDirs[name])
		cfg.PortMappings = ports
		start := time.Now()
		resp, err := d.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("run pod %s: %v", name, err)
		}
		t.Logf("RunPodSandbox %s: %s", name, time.Since(start))
		st, err := d.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
		if err != nil {
			t.Fatal(err)
		}
		ip = st.GetStatus().GetNetwork().GetIp()
		if parsed := net.ParseIP(ip); parsed == nil || !subnet.Contains(parsed) {
			t.Fatalf("pod %s IP %q is not in %s", name, ip, d.podCIDR)
		}
		cr, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId,
			Config: containerConfig(name, image, cmd...), SandboxConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		return resp.PodSandboxId, cr.ContainerId, ip
	}
	podA, _, ipA := run("net-a", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(hostPort)}},
		"sh", "-c", "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 80 -h /www")
	podB, ctrB, ipB := run("net-b", nil, "sleep", "3600")
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}

	// Pod B reaches pod A by IP.
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := d.rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctrB,
			Cmd: []string{"sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 ` + ipA + " 80"}, Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		out = string(resp.Stdout) + string(resp.Stderr)
		if resp.ExitCode == 0 && strings.Contains(out, "hello-from-a") {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(logA, "net-a.log"))
			t.Fatalf("pod B could not fetch from pod A at %s: exit %d: %s\npod A's log: %s", ipA, resp.ExitCode, out, logs)
		}
	}

	// The host reaches pod A by IP, and through its host port on 127.0.0.1.
	client := &http.Client{Timeout: 2 * time.Second}
	for _, url := range []string{"http://" + ipA + ":80/", "http://127.0.0.1:" + itoa(hostPort) + "/"} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "hello-from-a") {
			t.Fatalf("GET %s: %q", url, body)
		}
	}

	for _, p := range []string{podA, podB} {
		if _, err := d.rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("veths left after removing the pods: %s", out)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", "peapod-"+d.bridge).CombinedOutput(); strings.Contains(string(out), itoa(hostPort)) {
		t.Errorf("host port left after removing the pods:\n%s", out)
	}
	if _, err := client.Get("http://127.0.0.1:" + itoa(hostPort) + "/"); err == nil {
		t.Error("host port still answers after the pod is gone")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
