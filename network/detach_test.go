package network

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestBridgeDetachHoldsAddress: DetachPod (StopPodSandbox's part) unmaps
// the host ports and stops the veth sending as the pod at once, but keeps
// the veth and the address; while the veth exists no other pod gets the
// address, even when the allocator's next pick is that address, and a new
// pod may take the freed host port. finish deletes the veth, then frees
// the address, which the next pod may then get.
func TestBridgeDetachHoldsAddress(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	nsA := newNetNS(t)
	port := freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: nsA, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	ipA := podIP(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	gw := gatewayOf(tb.subnet).String()
	inNS(t, nsA, "ping", "-c1", "-W2", gw)

	finish, err := tb.DetachPod(ctx, a)
	if err != nil || finish == nil {
		t.Fatalf("DetachPod: finish %v, err %v", finish != nil, err)
	}
	veth := vethName(a.ID)
	if _, err := netlink.LinkByName(veth); err != nil {
		t.Fatalf("veth gone at DetachPod already (%v): nothing left to test", err)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", tableName(tb.name)).CombinedOutput(); strings.Contains(string(out), strconv.Itoa(int(port))) {
		t.Errorf("host port still mapped after DetachPod:\n%s", out)
	}
	spoof, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput()
	if strings.Contains(string(spoof), ipA.String()) {
		t.Errorf("the anti-spoof table still lets the detached veth send from %s:\n%s", ipA, spoof)
	}
	if !strings.Contains(string(spoof), veth) {
		t.Errorf("the detached veth %s is no longer checked (it could send from any address):\n%s", veth, spoof)
	}
	// The namespace still exists (a dying one would too): it can send
	// nothing, so its ARP replies for ipA cannot reach a new pod.
	if out, err := exec.Command("nsenter", "--net="+nsA, "ping", "-c1", "-W1", gw).CombinedOutput(); err == nil {
		t.Errorf("the detached pod still reaches the gateway:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, a.ID)); err != nil {
		t.Errorf("IP record gone before the veth: %v", err)
	}

	// The allocator's next pick is ipA: it must skip it while the veth exists.
	tb.mu.Lock()
	tb.ipam.next = ip4ToU32(ipA)
	tb.mu.Unlock()
	nsB := newNetNS(t)
	b := Pod{ID: "pod-b-" + randHex(8), NetNS: nsB, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	ipB := podIP(t)(tb.SetupPod(ctx, b)) // the same host port: A's is free
	t.Cleanup(func() { tb.TeardownPod(ctx, b) })
	if ipB.Equal(ipA) {
		t.Fatalf("pod B got %s while pod A's veth still holds it", ipA)
	}

	// Detaching again (StopPodSandbox twice) returns the pending finish.
	again, err := tb.DetachPod(ctx, a)
	if err != nil || again == nil {
		t.Fatalf("second DetachPod: finish %v, err %v", again != nil, err)
	}
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := again(ctx); err != nil {
		t.Errorf("second finish: %v", err)
	}
	if _, err := netlink.LinkByName(veth); err == nil {
		t.Error("veth left after finish")
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, a.ID)); !os.IsNotExist(err) {
		t.Errorf("IP record left after finish: %v", err)
	}
	if out, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput(); strings.Contains(string(out), veth) {
		t.Errorf("anti-spoof element of the removed veth left:\n%s", out)
	}
	if f, err := tb.DetachPod(ctx, a); err != nil || f != nil {
		t.Errorf("DetachPod after finish: finish %v, err %v; want nothing left", f != nil, err)
	}
	// Now the address is free again.
	tb.mu.Lock()
	tb.ipam.next = ip4ToU32(ipA)
	tb.mu.Unlock()
	c := Pod{ID: "pod-c-" + randHex(8), NetNS: newNetNS(t)}
	if ipC := podIP(t)(tb.SetupPod(ctx, c)); !ipC.Equal(ipA) {
		t.Errorf("pod C got %s, want the freed %s", ipC, ipA)
	}
	t.Cleanup(func() { tb.TeardownPod(ctx, c) })
}

// TestBridgeDetachThenRestart: a daemon that dies between DetachPod and
// finish leaves the veth and the address; the next start's Reconcile,
// with the stopped pod not live, releases both and maps nothing for it.
func TestBridgeDetachThenRestart(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	port := freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	podIP(t)(tb.SetupPod(ctx, a))
	if _, err := tb.DetachPod(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := tb.reopen(t) // the crash: finish never ran
	if err := b.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(vethName(a.ID)); err == nil {
		t.Error("veth left after the restart's Reconcile")
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, a.ID)); !os.IsNotExist(err) {
		t.Errorf("IP record left after the restart's Reconcile: %v", err)
	}
	for _, family := range []string{"ip", "bridge"} {
		out, _ := exec.Command("nft", "list", "table", family, tableName(tb.name)).CombinedOutput()
		for _, s := range []string{strconv.Itoa(int(port)), vethName(a.ID)} {
			if strings.Contains(string(out), s) {
				t.Errorf("%s left in the %s table after the restart:\n%s", s, family, out)
			}
		}
	}
}

// TestBridgeDetachDualStack: DetachPod's netlink deletion of the
// anti-spoof elements (forgetAddresses) removes the IPv6 one too, and
// finish the rest.
func TestBridgeDetachDualStack(t *testing.T) {
	tb := newDualStackBridge(t)
	ctx := context.Background()
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: newNetNS(t)}
	ip4, ip6 := dualIPs(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	list := func() string {
		out, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput()
		return string(out)
	}
	if s := list(); !strings.Contains(s, ip4.String()) || !strings.Contains(s, ip6.String()) {
		t.Fatalf("anti-spoof table lacks the pod's addresses before DetachPod:\n%s", s)
	}
	finish, err := tb.DetachPod(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if s := list(); strings.Contains(s, ip4.String()) || strings.Contains(s, ip6.String()) || !strings.Contains(s, vethName(a.ID)) {
		t.Errorf("after DetachPod, want the veth checked without addresses:\n%s", s)
	}
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if s := list(); strings.Contains(s, vethName(a.ID)) {
		t.Errorf("veth element left after finish:\n%s", s)
	}
}

// TestNATRemovePortsNetlink: the netlink deletion of host-port elements
// (removePorts) finds them by the keys it encodes, for any-address and
// host-IP mappings of each protocol, without falling back to a rebuild.
func TestNATRemovePortsNetlink(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	p1, p2 := freePort(t), freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: p1},
		{Protocol: "udp", ContainerPort: 53, HostPort: p1},
		{Protocol: "sctp", ContainerPort: 90, HostPort: p2, HostIP: "127.0.0.1"},
	}}
	podIP(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	list := func() string {
		out, _ := exec.Command("nft", "list", "table", "ip", tableName(tb.name)).CombinedOutput()
		return string(out)
	}
	if s := list(); !strings.Contains(s, strconv.Itoa(int(p1))) || !strings.Contains(s, strconv.Itoa(int(p2))) {
		t.Fatalf("ports not mapped:\n%s", s)
	}
	tb.mu.Lock()
	err := tb.nat.removePorts(ctx, tb.ipam.byPod[a.ID])
	tb.mu.Unlock()
	if err != nil {
		t.Fatalf("removePorts: %v", err)
	}
	if s := list(); strings.Contains(s, strconv.Itoa(int(p1))) || strings.Contains(s, strconv.Itoa(int(p2))) {
		t.Errorf("ports left after removePorts:\n%s", s)
	}
}
