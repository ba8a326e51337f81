package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// keepSysctl restores the sysctl at path when the test ends.
func keepSysctl(t *testing.T, path string) {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", path, err)
		}
	})
}

// freeSubnet6 picks an fd00:99:X::/64 no route uses.
func freeSubnet6(t *testing.T) string {
	t.Helper()
	for range 50 {
		cidr := fmt.Sprintf("fd00:99:%s::/64", randHex(4))
		_, subnet, _ := net.ParseCIDR(cidr)
		if checkOverlap("", subnet) == nil {
			return cidr
		}
	}
	t.Fatal("no free fd00:99:X::/64")
	return ""
}

// newDualStackBridge is newTestBridge with a v6 range too. Its guard is an
// inet table, so v6 does not leave the machine either, and
// net.ipv6.conf.all.forwarding is restored at the end.
func newDualStackBridge(t *testing.T) *testBridge {
	t.Helper()
	needRoot(t)
	keepSysctl(t, "/proc/sys/net/ipv6/conf/all/forwarding")
	tb := &testBridge{name: "ppt" + randHex(8), cidr: freeSubnet(t) + "," + freeSubnet6(t), stateDir: t.TempDir()}
	guard := "ppt-guard6-" + tb.name
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`table inet %s {
  chain forward { type filter hook forward priority -10; iifname "%s" oifname != "%[2]s" drop; }
}`, guard, tb.name))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("guard table: %v: %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("nft", "delete", "table", "ip", tableName(tb.name)).Run()
		exec.Command("nft", "delete", "table", "ip6", tableName(tb.name)).Run()
		exec.Command("nft", "delete", "table", "bridge", tableName(tb.name)).Run()
		if br, err := netlink.LinkByName(tb.name); err == nil {
			links, _ := netlink.LinkList()
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Attrs().Index {
					t.Errorf("veth %s left on the bridge", l.Attrs().Name)
					netlink.LinkDel(l)
				}
			}
			netlink.LinkDel(br)
		}
		exec.Command("nft", "delete", "table", "inet", guard).Run()
	})
	b, err := NewBridge(context.Background(), BridgeConfig{Name: tb.name, PodCIDR: tb.cidr, StateDir: tb.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("not ready: %v", err)
	}
	tb.Bridge = b
	return tb
}

func dualIPs(t *testing.T) func(Result, error) (net.IP, net.IP) {
	t.Helper()
	return func(res Result, err error) (net.IP, net.IP) { return dualIPsOf(t, res, err) }
}

func dualIPsOf(t *testing.T, res Result, err error) (net.IP, net.IP) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 2 || res.IPs[0].To4() == nil || res.IPs[1].To4() != nil {
		t.Fatalf("want IPv4 then IPv6, got %v", res.IPs)
	}
	return res.IPs[0], res.IPs[1]
}

// serve6 answers every TCP connection to addr (any family) with reply.
func serve6(t *testing.T, nsPath, addr, reply string) {
	t.Helper()
	serveNet(t, "tcp", nsPath, addr, reply)
}

// fetch6 is fetch for addresses of any family.
func fetch6(t *testing.T, nsPath, addr string) (string, error) {
	t.Helper()
	return fetchNet(t, "tcp", nsPath, addr)
}

// TestBridgeDualStack: with a v4 and a v6 range, pods get both addresses
// (v4 first) and both default routes, reach each other and are reached by
// the host over v6, a host port answers on the bridge's v6 address, and
// teardown releases everything.
func TestBridgeDualStack(t *testing.T) {
	tb := newDualStackBridge(t)
	ctx := context.Background()
	if got, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); strings.TrimSpace(string(got)) != "1" {
		t.Errorf("net.ipv6.conf.all.forwarding = %s with a v6 range", got)
	}
	if out, _ := exec.Command("ip", "-6", "-o", "addr", "show", "dev", tb.name).CombinedOutput(); !strings.Contains(string(out), tb.gateway6.String()+"/64") {
		t.Errorf("bridge lacks %s/64: %s", tb.gateway6, out)
	}
	nsA, nsB := newNetNS(t), newNetNS(t)
	port := freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: nsA}
	b := Pod{ID: "pod-b-" + randHex(8), NetNS: nsB, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 8080, HostPort: port}}}
	start := time.Now()
	ipA4, ipA6 := dualIPs(t)(tb.SetupPod(ctx, a))
	t.Logf("dual-stack SetupPod took %s: %s %s", time.Since(start), ipA4, ipA6)
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	_, ipB6 := dualIPs(t)(tb.SetupPod(ctx, b))
	t.Cleanup(func() { tb.TeardownPod(ctx, b) })
	if !tb.subnet6.Contains(ipA6) || ipA6.Equal(ipB6) {
		t.Fatalf("v6 addresses %s %s not distinct in %s", ipA6, ipB6, tb.subnet6)
	}
	if out := inNS(t, nsA, "ip", "-6", "route", "show", "default"); !strings.Contains(out, "default via "+tb.gateway6.String()+" dev eth0") {
		t.Errorf("v6 default route: %s", out)
	}
	inNS(t, nsA, "ping", "-6", "-c1", "-W2", ipB6.String())
	inNS(t, nsA, "ping", "-6", "-c1", "-W2", tb.gateway6.String())
	serve6(t, nsB, ":8080", "from-b")
	if got, err := fetch6(t, nsA, net.JoinHostPort(ipB6.String(), "8080")); err != nil || got != "from-b" {
		t.Fatalf("pod A to pod B over v6: %q, %v", got, err)
	}
	if got, err := fetch6(t, "", net.JoinHostPort(ipB6.String(), "8080")); err != nil || got != "from-b" {
		t.Fatalf("host to pod B over v6: %q, %v", got, err)
	}
	hp := fmt.Sprint(port)
	if got, err := fetch6(t, "", net.JoinHostPort(tb.gateway6.String(), hp)); err != nil || got != "from-b" {
		t.Fatalf("host port on [%s]:%s: %q, %v", tb.gateway6, hp, got, err)
	}
	if got, err := fetch6(t, "", "127.0.0.1:"+hp); err != nil || got != "from-b" {
		t.Fatalf("host port on 127.0.0.1:%s: %q, %v", hp, got, err)
	}
	if got, err := fetch6(t, "", "[::1]:"+hp); err != nil || got != "from-b" {
		t.Logf("host port on [::1]:%s: %q, %v (IPv6 has no route_localnet: expected)", hp, got, err)
	} else {
		t.Logf("host port on [::1]:%s answers", hp)
	}
	out, _ := exec.Command("nft", "list", "table", "ip6", tableName(tb.name)).CombinedOutput()
	if !strings.Contains(string(out), ipB6.String()) || !strings.Contains(string(out), "masquerade") {
		t.Errorf("ip6 table lacks pod B's host port or masquerade:\n%s", out)
	}
	for _, p := range []Pod{a, b} {
		if err := tb.TeardownPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := exec.Command("nft", "list", "map", "ip6", tableName(tb.name), mapHostPorts).CombinedOutput(); strings.Contains(string(out), ipB6.String()) {
		t.Errorf("v6 host port left after teardown:\n%s", out)
	}
	if len(tb.ipam.byPod) != 0 {
		t.Errorf("allocations left: %v", tb.ipam.byPod)
	}
	// Released addresses are handed out again (after the others): a new
	// pod gets the next pair, with the same host part in both.
	c := Pod{ID: "pod-c-" + randHex(8), NetNS: newNetNS(t)}
	ipC4, ipC6 := dualIPs(t)(tb.SetupPod(ctx, c))
	defer tb.TeardownPod(ctx, c)
	if ipC4.To4()[3] != ipC6[15] {
		t.Errorf("host parts differ: %s %s", ipC4, ipC6)
	}
}
