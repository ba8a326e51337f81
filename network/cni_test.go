package network

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

const debianCNIBin = "/usr/lib/cni"

// newTestCNI writes a conflist for Debian's bridge + host-local plugins on a
// fresh bridge and subnet (no masquerade: no iptables rules to leave).
func newTestCNI(t *testing.T, pluginType string) (*CNI, string) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat(filepath.Join(debianCNIBin, "bridge")); err != nil {
		t.Skip("needs Debian's containernetworking-plugins")
	}
	br, cidr, dir := "ppt"+randHex(8), freeSubnet(t), t.TempDir()
	newGuard(t, br)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppt-net", "plugins": [
  {"type": %q, "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`,
		pluginType, br, filepath.Join(dir, "ipam"), cidr)
	if err := os.WriteFile(filepath.Join(dir, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(br); err == nil {
			netlink.LinkDel(l)
		}
	})
	c, err := NewCNI(context.Background(), CNIConfig{ConfDir: dir, BinDirs: []string{debianCNIBin}, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	return c, cidr
}

func TestCNIBridgeHostLocal(t *testing.T) {
	c, cidr := newTestCNI(t, "bridge")
	if err := c.Ready(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nsA, nsB := newNetNS(t), newNetNS(t)
	a := Pod{ID: "cni-a-" + randHex(8), Name: "a", Namespace: "ns", UID: "uid-a", NetNS: nsA}
	b := Pod{ID: "cni-b-" + randHex(8), Name: "b", Namespace: "ns", UID: "uid-b", NetNS: nsB}
	ipA := podIP(t)(c.SetupPod(ctx, a))
	t.Cleanup(func() { c.TeardownPod(ctx, a) })
	ipB := podIP(t)(c.SetupPod(ctx, b))
	if !strings.HasPrefix(ipA.String(), strings.TrimSuffix(cidr, "0/24")) {
		t.Fatalf("pod IP %s not in %s", ipA, cidr)
	}
	if err := c.Check(ctx, a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	inNS(t, nsA, "ping", "-c1", "-W2", ipB.String())

	// B is gone without a DEL (a crash); Reconcile runs it.
	if err := c.Reconcile(ctx, []string{a.ID}); err != nil {
		t.Fatal(err)
	}
	if atts, _ := c.cni.GetCachedAttachments(b.ID); len(atts) != 0 {
		t.Errorf("B still attached after reconcile: %v", atts)
	}
	if err := c.TeardownPod(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := c.TeardownPod(ctx, a); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func TestCNIUnknownPlugin(t *testing.T) {
	c, _ := newTestCNI(t, "no-such-plugin")
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := c.SetupPod(context.Background(), Pod{ID: "x", NetNS: newNetNS(t)}); err == nil || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Fatalf("SetupPod: %v", err)
	}
}
