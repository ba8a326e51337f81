package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"nft", "nsenter", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install nftables util-linux iputils-ping)", tool)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// freeSubnet picks a 10.199.X.0/24 no route uses.
func freeSubnet(t *testing.T) string {
	t.Helper()
	for range 50 {
		x, _ := rand.Int(rand.Reader, big.NewInt(250))
		cidr := fmt.Sprintf("10.199.%d.0/24", x.Int64()+1)
		_, subnet, _ := net.ParseCIDR(cidr)
		if checkOverlap("", subnet) == nil {
			return cidr
		}
	}
	t.Fatal("no free 10.199.X.0/24")
	return ""
}

// testBridge is a Bridge on a fresh bridge device and subnet. A guard table
// drops anything the bridge would forward to another interface, so nothing
// a test does leaves the machine. Cleanup removes the bridge, the tables
// and the veths, even after a failure.
type testBridge struct {
	*Bridge
	name, cidr, stateDir string
}

func newTestBridge(t *testing.T) *testBridge {
	t.Helper()
	needRoot(t)
	tb := &testBridge{name: "ppt" + randHex(8), cidr: freeSubnet(t), stateDir: t.TempDir()}
	newGuard(t, tb.name)
	t.Cleanup(func() {
		exec.Command("nft", "delete", "table", "ip", tableName(tb.name)).Run()
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

// newGuard drops anything bridge would forward to another interface.
func newGuard(t *testing.T, bridge string) string {
	t.Helper()
	name := "ppt-guard-" + bridge
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`table ip %s {
  chain forward { type filter hook forward priority -10; iifname "%s" oifname != "%[2]s" drop; }
}`, name, bridge))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("guard table: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "ip", name).Run() })
	return name
}

// reopen is a new Bridge on the same device and state, as after a restart.
func (tb *testBridge) reopen(t *testing.T) *Bridge {
	t.Helper()
	b, err := NewBridge(context.Background(), BridgeConfig{Name: tb.name, PodCIDR: tb.cidr, StateDir: tb.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newNetNS is a network namespace held by a sleep child, as the pause holds
// a pod's.
func newNetNS(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
}

func inNS(t *testing.T, nsPath string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), nsPath, err, out)
	}
	return string(out)
}

// inNetNS runs f on a thread switched into the namespace at nsPath; sockets
// made there stay in that namespace.
func inNetNS(t *testing.T, nsPath string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

// serve answers every TCP connection to the IPv4 addr in the namespace
// with reply.
func serve(t *testing.T, nsPath, addr, reply string) {
	t.Helper()
	serveNet(t, "tcp4", nsPath, addr, reply)
}

// serveNet is serve for a network of net.Listen ("tcp4", "tcp").
func serveNet(t *testing.T, network, nsPath, addr, reply string) {
	t.Helper()
	var l net.Listener
	var err error
	inNetNS(t, nsPath, func() { l, err = net.Listen(network, addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, reply)
			c.Close()
		}
	}()
}

// fetch connects to the IPv4 addr (from the namespace if nsPath is set)
// and returns what the server says.
func fetch(t *testing.T, nsPath, addr string) (string, error) {
	t.Helper()
	return fetchNet(t, "tcp4", nsPath, addr)
}

// fetchNet is fetch for a network of net.Dial ("tcp4", "tcp").
func fetchNet(t *testing.T, network, nsPath, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	dial := func() { c, err = net.DialTimeout(network, addr, 2*time.Second) }
	if nsPath == "" {
		dial()
	} else {
		inNetNS(t, nsPath, dial)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func podIP(t *testing.T) func(Result, error) net.IP {
	t.Helper()
	return func(res Result, err error) net.IP {
		if err != nil {
			t.Fatal(err)
		}
		if len(res.IPs) != 1 || res.IPs[0].To4() == nil {
			t.Fatalf("want one IPv4, got %v", res.IPs)
		}
		return res.IPs[0]
	}
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestBridgeSetupTeardown(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	ns := newNetNS(t)
	pod := Pod{ID: "pod-a-" + randHex(8), NetNS: ns}
	start := time.Now()
	ip := podIP(t)(tb.SetupPod(ctx, pod))
	t.Logf("SetupPod took %s, ip %s", time.Since(start), ip)
	gw := gatewayOf(tb.subnet).String()

	if out := inNS(t, ns, "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, ip.String()+"/24") {
		t.Errorf("eth0 lacks %s/24: %s", ip, out)
	}
	if out := inNS(t, ns, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Errorf("lo is not up: %s", out)
	}
	if out := inNS(t, ns, "ip", "route", "show", "default"); !strings.Contains(out, "default via "+gw+" dev eth0") {
		t.Errorf("default route: %s", out)
	}
	inNS(t, ns, "ping", "-c1", "-W2", gw)

	if err := tb.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(vethName(pod.ID)); err == nil {
		t.Error("veth left after teardown")
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, pod.ID)); !os.IsNotExist(err) {
		t.Errorf("IP record left after teardown: %v", err)
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("eth0 left in the netns: %s", out)
	}
	if err := tb.TeardownPod(ctx, pod); err != nil {
		t.Errorf("second teardown: %v", err)
	}
}

func TestBridgeTwoPodsReachEachOther(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	nsA, nsB := newNetNS(t), newNetNS(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: nsA}
	b := Pod{ID: "pod-b-" + randHex(8), NetNS: nsB}
	ipA := podIP(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	ipB := podIP(t)(tb.SetupPod(ctx, b))
	t.Cleanup(func() { tb.TeardownPod(ctx, b) })
	if ipA.Equal(ipB) {
		t.Fatalf("both pods got %s", ipA)
	}
	inNS(t, nsA, "ping", "-c1", "-W2", ipB.String())
	serve(t, nsB, ":8080", "from-b")
	if got, err := fetch(t, nsA, ipB.String()+":8080"); err != nil || got != "from-b" {
		t.Fatalf("pod A to pod B: %q, %v", got, err)
	}
	// The host reaches a pod directly.
	if got, err := fetch(t, "", ipB.String()+":8080"); err != nil || got != "from-b" {
		t.Fatalf("host to pod B: %q, %v", got, err)
	}
}

func TestBridgeHostPorts(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	nsA, nsB := newNetNS(t), newNetNS(t)
	anyPort, loPort := freePort(t), freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: nsA, Ports: []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: anyPort},
		{Protocol: "tcp", ContainerPort: 81, HostPort: loPort, HostIP: "127.0.0.1"},
		{Protocol: "udp", ContainerPort: 53, HostPort: anyPort},
		{Protocol: "tcp", ContainerPort: 9999}, // no host port: not mapped
	}}
	podIP(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	serve(t, nsA, ":80", "port-80")
	serve(t, nsA, ":81", "port-81")
	gw := gatewayOf(tb.subnet).String()
	for _, c := range []struct{ from, addr, want string }{
		{"", fmt.Sprintf("127.0.0.1:%d", anyPort), "port-80"},
		{"", fmt.Sprintf("%s:%d", gw, anyPort), "port-80"},
		{"", fmt.Sprintf("127.0.0.1:%d", loPort), "port-81"},
		{nsA, fmt.Sprintf("%s:%d", gw, anyPort), "port-80"}, // hairpin into the same pod
	} {
		if got, err := fetch(t, c.from, c.addr); err != nil || got != c.want {
			t.Errorf("from %q to %s: got %q, %v; want %q", c.from, c.addr, got, err, c.want)
		}
	}
	// A host IP mapping answers only on that IP.
	if got, err := fetch(t, "", fmt.Sprintf("%s:%d", gw, loPort)); err == nil {
		t.Errorf("%s:%d answered %q; the mapping is for 127.0.0.1 only", gw, loPort, got)
	}

	// A second pod asking for a taken host port fails clearly; the first keeps it.
	b := Pod{ID: "pod-b-" + randHex(8), NetNS: nsB, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: anyPort}}}
	if _, err := tb.SetupPod(ctx, b); err == nil || !strings.Contains(err.Error(), "already mapped to pod "+a.ID) {
		t.Fatalf("second pod on a taken host port: %v", err)
	}
	if out := inNS(t, nsB, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("failed setup left eth0: %s", out)
	}
	if got, err := fetch(t, "", fmt.Sprintf("127.0.0.1:%d", anyPort)); err != nil || got != "port-80" {
		t.Errorf("first pod after the conflict: %q, %v", got, err)
	}

	// Teardown unmaps.
	if err := tb.TeardownPod(ctx, a); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", tableName(tb.name)).CombinedOutput(); strings.Contains(string(out), strconv.Itoa(int(anyPort))) {
		t.Errorf("host port left in the table after teardown:\n%s", out)
	}
	if _, err := fetch(t, "", fmt.Sprintf("127.0.0.1:%d", anyPort)); err == nil {
		t.Error("host port still answers after teardown")
	}
}

func TestBridgeBadPorts(t *testing.T) {
	for _, c := range []struct {
		name string
		in   PortMapping
		want string
	}{
		{"protocol", PortMapping{Protocol: "icmp", ContainerPort: 1, HostPort: 1}, "not tcp, udp or sctp"},
		{"host port range", PortMapping{Protocol: "tcp", ContainerPort: 1, HostPort: 70000}, "1 to 65535"},
		{"container port", PortMapping{Protocol: "tcp", ContainerPort: 0, HostPort: 80}, "1 to 65535"},
		{"host ip", PortMapping{Protocol: "tcp", ContainerPort: 1, HostPort: 80, HostIP: "::1"}, "pod_cidr has no IPv6 range"},
		{"host ip garbage", PortMapping{Protocol: "tcp", ContainerPort: 1, HostPort: 80, HostIP: "nope"}, "not an IP address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := checkPorts([]PortMapping{c.in}, false); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestParsePodCIDR(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.88.0.0/16", ""},
		{"10.88.0.1/16", "did you mean 10.88.0.0/16"},
		{"10.88.0.0", "not a CIDR"},
		{"fd00::/64", "an IPv4 CIDR is needed"},
		{"10.88.0.0/16,fd00:88::/64", ""},
		{"fd00:88::/64, 10.88.0.0/16", ""},
		{"10.88.0.0/16,fd00:88::/120", "smaller than the IPv4 range"},
		{"10.88.0.0/16,fd00:88::/112", ""},
		{"10.88.0.0/24,fd00:88::1/120", "host bits set"},
		{"10.88.0.0/24,fd00:88::/48", "/64 to /120"},
		{"10.88.0.0/24,fe80::/64", "not a unicast range"},
		{"10.88.0.0/24,10.89.0.0/24", "more than one IPv4"},
		{"10.0.0.0/30", "/8 to /28"},
	} {
		_, _, err := ParsePodCIDRs(c.in)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: got %v, want %q", c.in, err, c.want)
		}
	}
}

func TestBridgeOverlappingCIDR(t *testing.T) {
	tb := newTestBridge(t)
	// Not fatal (the daemon must keep managing its pods): the network is
	// not ready, and says why.
	name := "ppt" + randHex(8)
	newGuard(t, name)
	t.Cleanup(func() {
		if br, err := netlink.LinkByName(name); err == nil {
			t.Errorf("bridge %s made with an overlapping pod_cidr", name)
			netlink.LinkDel(br)
		}
	})
	b, err := NewBridge(context.Background(), BridgeConfig{Name: name, PodCIDR: strings.Replace(tb.cidr, "/24", "/25", 1), StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("NewBridge with an overlapping pod_cidr: %v", err)
	}
	if err := b.Ready(); err == nil || !strings.Contains(err.Error(), "overlaps "+tb.cidr+" on "+tb.name) {
		t.Fatalf("Ready: got %v", err)
	}
	if _, err := b.SetupPod(context.Background(), Pod{ID: strings.Repeat("ab", 32)}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("SetupPod: got %v", err)
	}
}

// TestBridgeIPAMRestartAndReclaim: allocations survive a new instance, and
// Reconcile frees those of pods that are gone (a crash mid-life).
func TestBridgeIPAMRestartAndReclaim(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	nsA, nsB := newNetNS(t), newNetNS(t)
	port := freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: nsA, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	ipA := podIP(t)(tb.SetupPod(ctx, a))
	serve(t, nsA, ":80", "a")

	// "Restart": the new instance knows A's address and port.
	b2 := tb.reopen(t)
	if err := b2.Ready(); err != nil {
		t.Fatal(err)
	}
	if got, err := fetch(t, "", fmt.Sprintf("127.0.0.1:%d", port)); err != nil || got != "a" {
		t.Fatalf("host port after restart: %q, %v", got, err)
	}
	b := Pod{ID: "pod-b-" + randHex(8), NetNS: nsB, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	if _, err := b2.SetupPod(ctx, b); err == nil {
		t.Fatal("restarted instance handed out A's host port")
	}
	b.Ports = nil
	ipB := podIP(t)(b2.SetupPod(ctx, b))
	if ipB.Equal(ipA) {
		t.Fatalf("restarted instance handed out A's IP %s", ipA)
	}

	// A is gone without a teardown; Reconcile releases its IP, veth and port.
	if err := b2.Reconcile(ctx, []string{b.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(vethName(a.ID)); err == nil {
		t.Error("A's veth left after reconcile")
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, a.ID)); !os.IsNotExist(err) {
		t.Errorf("A's IP record left after reconcile: %v", err)
	}
	if _, err := fetch(t, "", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		t.Error("A's host port still answers after reconcile")
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, b.ID)); err != nil {
		t.Errorf("B's record lost: %v", err)
	}
	inNS(t, nsB, "ping", "-c1", "-W2", gatewayOf(tb.subnet).String())
	if err := b2.TeardownPod(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// TestBridgeSetupLatency measures SetupPod (netns creation excluded) over
// pods that stay up, as on a busy node, then tears them all down.
func TestBridgeSetupLatency(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	n := 100
	if testing.Short() {
		n = 20
	}
	var took []time.Duration
	for i := range n {
		p := Pod{ID: fmt.Sprintf("pod-%d-%s", i, randHex(8)), NetNS: newNetNS(t)}
		start := time.Now()
		if _, err := tb.SetupPod(ctx, p); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		t.Cleanup(func() { tb.TeardownPod(ctx, p) })
	}
	slices.Sort(took)
	t.Logf("SetupPod over %d pods: p50 %s, p99 %s, max %s", n, took[n/2], took[n*99/100], took[n-1])
}
