package network

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestReloadableTearsDownThroughRecordedBackend: pods set up by the
// built-in network are released by it after the daemon moved to CNI (here
// network = cni still waiting for a config, so nothing else could release
// them): one that recorded its backend, one recorded before backends were
// (""), and one the restart found gone (Reconcile). The teardown-only
// bridge removes veth, IPAM record and host-port element.
func TestReloadableTearsDownThroughRecordedBackend(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	root, cniDir := t.TempDir(), t.TempDir()
	bridge, cidr := "ppt"+randHex(8), freeSubnet(t)
	newGuard(t, bridge)
	t.Cleanup(func() {
		exec.Command("nft", "delete", "table", "ip", tableName(bridge)).Run()
		exec.Command("nft", "delete", "table", "bridge", tableName(bridge)).Run()
		exec.Command("ip", "link", "del", bridge).Run()
	})
	cfg := Config{Mode: ModeBuiltin, Bridge: bridge, PodCIDR: cidr, Root: root, CNIConfDir: cniDir}
	builtin, err := OpenReloadable(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	pods := []Pod{
		{ID: "recorded-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: port}}},
		{ID: "legacy-" + randHex(8), NetNS: newNetNS(t)},
		{ID: "gone-" + randHex(8), NetNS: newNetNS(t)},
	}
	for i := range pods {
		res, err := builtin.SetupPod(ctx, pods[i])
		if err != nil {
			t.Fatal(err)
		}
		if res.Backend != BackendBuiltin {
			t.Fatalf("SetupPod reports backend %q", res.Backend)
		}
		pods[i].Backend = res.Backend
	}
	pods[1].Backend = "" // a record from before backends were recorded

	// CNI now, with a range only CNI can use (IPv6 alone): the built-in
	// network's records still say what to release.
	cfg.Mode, cfg.PodCIDR = ModeCNI, "fd00:99::/64"
	var log bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
	cni, err := OpenReloadable(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "POD NETWORK BACKEND CHANGED since the last start: new pods get cni, not builtin") {
		t.Errorf("no warning of the backend change:\n%s", log.String())
	}
	if cni.Kind() != BackendCNI || cni.Ready() == nil || !strings.Contains(cni.Ready().Error(), cniDir) {
		t.Fatalf("network = cni without a config: kind %s, ready %v", cni.Kind(), cni.Ready())
	}
	for _, p := range pods[:2] {
		if err := cni.TeardownPod(ctx, p); err != nil {
			t.Fatalf("teardown of %s: %v", p.ID, err)
		}
	}
	if err := cni.Reconcile(ctx, nil); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	for _, p := range pods {
		if _, err := netlink.LinkByName(vethName(p.ID)); err == nil {
			t.Errorf("veth of %s left", p.ID)
		}
		if _, err := os.Stat(filepath.Join(root, "network", "ipam-"+bridge, p.ID)); !os.IsNotExist(err) {
			t.Errorf("IPAM record of %s left (err %v)", p.ID, err)
		}
	}
	out, _ := exec.Command("nft", "list", "map", "ip", tableName(bridge), mapHostPorts).CombinedOutput()
	if strings.Contains(string(out), strconv.Itoa(int(port))) {
		t.Errorf("host port %d left: %s", port, out)
	}
}
