package network

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"
)

// countingNFT counts the transactions a table runs through its nft
// process (knftables execs nft for each Run).
type countingNFT struct {
	knftables.Interface
	runs *atomic.Int32
}

func (c countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs.Add(1)
	return c.Interface.Run(ctx, tx)
}

// TestBridgeSetupNoNftProcess: SetupPod (RunPodSandbox's network part)
// adds the pod's anti-spoof elements and its host ports, on any address
// and on a host IP, without running an nft transaction (an nft process
// per pod cost ~100 ms on a loaded node), and the elements are the ones
// the rules match: the pod reaches the gateway, its host ports answer,
// and TeardownPod removes every element again.
func TestBridgeSetupNoNftProcess(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	var runs atomic.Int32
	tb.mu.Lock()
	tb.spoof.nft = countingNFT{tb.spoof.nft, &runs}
	tb.nat.nft = countingNFT{tb.nat.nft, &runs}
	tb.mu.Unlock()

	ns := newNetNS(t)
	anyPort, loPort := freePort(t), freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: ns, Ports: []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: anyPort},
		{Protocol: "tcp", ContainerPort: 81, HostPort: loPort, HostIP: "127.0.0.1"},
	}}
	ip := podIP(t)(tb.SetupPod(ctx, a))
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	if n := runs.Load(); n != 0 {
		t.Errorf("SetupPod ran %d nft transaction(s); want none", n)
	}
	veth := vethName(a.ID)
	spoof, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput()
	for _, want := range []string{`"` + veth + `"`, `"` + veth + `" . ` + ip.String()} {
		if !strings.Contains(string(spoof), want) {
			t.Errorf("anti-spoof table lacks %s:\n%s", want, spoof)
		}
	}
	nat, _ := exec.Command("nft", "list", "table", "ip", tableName(tb.name)).CombinedOutput()
	for _, want := range []string{
		fmt.Sprintf("tcp . %d : %s . 80", anyPort, ip),
		fmt.Sprintf("127.0.0.1 . tcp . %d : %s . 81", loPort, ip),
	} {
		if !strings.Contains(string(nat), want) {
			t.Errorf("host-port maps lack %q:\n%s", want, nat)
		}
	}
	inNS(t, ns, "ping", "-c1", "-W2", gatewayOf(tb.subnet).String())
	serve(t, ns, ":80", "port-80")
	serve(t, ns, ":81", "port-81")
	for addr, want := range map[string]string{
		fmt.Sprintf("127.0.0.1:%d", anyPort): "port-80",
		fmt.Sprintf("127.0.0.1:%d", loPort):  "port-81",
	} {
		if got, err := fetch(t, "", addr); err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", addr, got, err, want)
		}
	}

	if err := tb.TeardownPod(ctx, a); err != nil {
		t.Fatal(err)
	}
	spoof, _ = exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput()
	nat, _ = exec.Command("nft", "list", "table", "ip", tableName(tb.name)).CombinedOutput()
	if strings.Contains(string(spoof), veth) || strings.Contains(string(nat), strconv.Itoa(int(anyPort))) || strings.Contains(string(nat), strconv.Itoa(int(loPort))) {
		t.Errorf("elements left after teardown:\n%s\n%s", spoof, nat)
	}
}

// TestBridgeSetupElementsAllOrNone: when the host-port part of SetupPod's
// batch fails (the ip table was deleted behind the daemon's back), none of
// its elements stays: the veth is not left checked-and-allowed in the
// anti-spoof table, no port is mapped, and the veth and the address are
// released.
func TestBridgeSetupElementsAllOrNone(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	if out, err := exec.Command("nft", "delete", "table", "ip", tableName(tb.name)).CombinedOutput(); err != nil {
		t.Fatalf("delete the ip table: %v: %s", err, out)
	}
	port := freePort(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}}
	if _, err := tb.SetupPod(ctx, a); err == nil {
		tb.TeardownPod(ctx, a)
		t.Fatal("SetupPod succeeded with its host-port table gone")
	}
	veth := vethName(a.ID)
	if spoof, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput(); strings.Contains(string(spoof), veth) {
		t.Errorf("the failed setup left anti-spoof elements:\n%s", spoof)
	}
	if _, err := netlink.LinkByName(veth); err == nil {
		t.Errorf("the failed setup left veth %s", veth)
	}
	if _, err := os.Stat(filepath.Join(tb.stateDir, a.ID)); !os.IsNotExist(err) {
		t.Errorf("the failed setup kept the address record: %v", err)
	}
	tb.mu.Lock()
	_, held := tb.ipam.byPod[a.ID]
	tb.mu.Unlock()
	if held {
		t.Error("the failed setup kept the address")
	}
}

// TestBridgeSetupRecordFails: the address record is written while the
// veth is made; when the record cannot be written, SetupPod fails and
// leaves no veth, no element and no address taken; the next setup
// succeeds.
func TestBridgeSetupRecordFails(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	tb.mu.Lock()
	dir, next := tb.ipam.dir, tb.ipam.next
	tb.ipam.dir = filepath.Join(t.TempDir(), "missing")
	tb.mu.Unlock()
	ns := newNetNS(t)
	a := Pod{ID: "pod-a-" + randHex(8), NetNS: ns, Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: freePort(t)}}}
	if _, err := tb.SetupPod(ctx, a); err == nil || !strings.Contains(err.Error(), "record IP of pod") {
		tb.TeardownPod(ctx, a)
		t.Fatalf("SetupPod with its record unwritable: %v", err)
	}
	veth := vethName(a.ID)
	if _, err := netlink.LinkByName(veth); err == nil {
		t.Errorf("the failed setup left veth %s", veth)
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("the failed setup left eth0 in the pod: %s", out)
	}
	if spoof, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput(); strings.Contains(string(spoof), veth) {
		t.Errorf("the failed setup left anti-spoof elements:\n%s", spoof)
	}
	tb.mu.Lock()
	_, held := tb.ipam.byPod[a.ID]
	_, ipTaken := tb.ipam.byIP[next]
	tb.ipam.dir = dir
	tb.mu.Unlock()
	if held || ipTaken {
		t.Errorf("the failed setup kept the address %s (pod %v, address %v)", u32ToIP4(next), held, ipTaken)
	}
	podIP(t)(tb.SetupPod(ctx, a))
	if err := tb.TeardownPod(ctx, a); err != nil {
		t.Error(err)
	}
}
