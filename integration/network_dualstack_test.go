package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNetworkDualStack runs the daemon with a dual-stack --pod-cidr:
// PodSandboxStatus reports the v4 IP first and the v6 one as additional,
// pod B reaches pod A over v6 (TCP), the host reaches pod A over v6 and
// through its host port on the bridge's v6 address, and removing the pods
// leaves no veth nor v6 host port. net.ipv6.conf.all.forwarding, which the
// daemon turns on, is restored; an inet guard keeps v6 on the machine.
func TestPodNetworkDualStack(t *testing.T) {
	const fwd = "/proc/sys/net/ipv6/conf/all/forwarding"
	oldFwd, err := os.ReadFile(fwd)
	if err != nil {
		t.Skip("no IPv6:", err)
	}
	t.Cleanup(func() { os.WriteFile(fwd, oldFwd, 0o644) })
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	v6 := fmt.Sprintf("fd00:98:%s::/64", randomSuffix()[:4])
	d.PodCIDR += "," + v6
	guard := "ppt-guard6-" + d.Bridge
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`table inet %[1]s {
  chain forward { type filter hook forward priority -10; iifname "%[2]s" oifname != "%[2]s" drop; }
}`, guard, d.Bridge))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("guard: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", guard).Run() })
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	_, subnet6, _ := net.ParseCIDR(v6)
	gw6 := make(net.IP, 16)
	copy(gw6, subnet6.IP)
	gw6[15] = 1
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	run := func(name string, ports []*runtimeapi.PortMapping, cmd ...string) (pod, ctr, ip6 string) {
		t.Helper()
		cfg := podConfig(name, t.TempDir())
		cfg.PortMappings = ports
		resp, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("run pod %s: %v", name, err)
		}
		st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
		if err != nil {
			t.Fatal(err)
		}
		n := st.GetStatus().GetNetwork()
		if ip := net.ParseIP(n.GetIp()); ip == nil || ip.To4() == nil {
			t.Fatalf("pod %s: primary IP %q is not IPv4", name, n.GetIp())
		}
		if len(n.GetAdditionalIps()) != 1 || !subnet6.Contains(net.ParseIP(n.GetAdditionalIps()[0].GetIp())) {
			t.Fatalf("pod %s: additional IPs %v, want one in %s", name, n.GetAdditionalIps(), v6)
		}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId,
			Config: containerConfig(name, image, cmd...), SandboxConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		return resp.PodSandboxId, cr.ContainerId, n.GetAdditionalIps()[0].GetIp()
	}
	podA, _, ipA := run("net6-a", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(hostPort)}},
		"sh", "-c", "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 80 -h /www")
	podB, ctrB, _ := run("net6-b", nil, "sleep", "3600")

	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctrB,
			Cmd: []string{"sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 ` + ipA + " 80"}, Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		out := string(resp.Stdout) + string(resp.Stderr)
		if resp.ExitCode == 0 && strings.Contains(out, "hello-from-a") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod B could not fetch from pod A at [%s]:80: exit %d: %s", ipA, resp.ExitCode, out)
		}
	}
	expectServed(t, "hello-from-a", "http://["+ipA+"]:80/", "http://["+gw6.String()+"]:"+itoa(hostPort)+"/")
	for _, p := range []string{podA, podB} {
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.Bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("veths left after removing the pods: %s", out)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip6", "peapod-"+d.Bridge).CombinedOutput(); strings.Contains(string(out), ipA) {
		t.Errorf("v6 host port left after removing the pods:\n%s", out)
	}
}
