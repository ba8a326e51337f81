package network

import (
	"context"
	"encoding/json"
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

// TestCNIPodLoopback: a pod on a CNI network has its loopback up, though
// the conflist has no loopback plugin (as containerd and CRI-O, peapod
// brings lo up itself): port-forward and a pod's own localhost servers
// reach 127.0.0.1. Before the fix, connecting to 127.0.0.1 in such a pod
// failed with "network is unreachable" (critest's portforward spec in the
// UML guest of make test-cgroupv2-full).
func TestCNIPodLoopback(t *testing.T) {
	c, _ := newTestCNI(t, "bridge")
	ctx := context.Background()
	ns := newNetNS(t)
	p := Pod{ID: "cni-lo-" + randHex(8), Name: "lo", Namespace: "ns", UID: "uid-lo", NetNS: ns}
	podIP(t)(c.SetupPod(ctx, p))
	t.Cleanup(func() { c.TeardownPod(ctx, p) })
	if out := inNS(t, ns, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "LOWER_UP") {
		t.Fatalf("lo in a CNI pod is not up: %s", out)
	}
	inNS(t, ns, "ping", "-c1", "-W2", "127.0.0.1")
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

// TestCNICapabilities: the capabilities peapod passes through libcni, as
// kubelet's runtimes pass them (pure translation: no plugin runs).
func TestCNICapabilities(t *testing.T) {
	for _, tc := range []struct {
		name        string
		podCIDR     string
		pod         Pod
		want        string // JSON of CapabilityArgs, "" for none
		wantErr     string
		wantOpenErr string
	}{
		{name: "nothing", want: ""},
		{name: "host ports", pod: Pod{Ports: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1"}, {Protocol: "udp", ContainerPort: 53}}},
			want: `{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}`},
		{name: "bandwidth", pod: Pod{Annotations: map[string]string{annotationIngressBandwidth: "10M", annotationEgressBandwidth: "1k", "other": "x"}},
			want: `{"bandwidth":{"ingressRate":10000000,"ingressBurst":4294967295,"egressRate":1000,"egressBurst":4294967295}}`},
		{name: "ingress only", pod: Pod{Annotations: map[string]string{annotationIngressBandwidth: "1Mi"}},
			want: `{"bandwidth":{"ingressRate":1048576,"ingressBurst":4294967295}}`},
		{name: "bandwidth not a quantity", pod: Pod{Annotations: map[string]string{annotationEgressBandwidth: "fast"}}, wantErr: annotationEgressBandwidth},
		{name: "bandwidth too small", pod: Pod{Annotations: map[string]string{annotationIngressBandwidth: "10"}}, wantErr: "1k to 1P"},
		{name: "bandwidth too large", pod: Pod{Annotations: map[string]string{annotationIngressBandwidth: "2P"}}, wantErr: "1k to 1P"},
		{name: "ip ranges", podCIDR: "10.88.0.0/16", want: `{"ipRanges":[[{"subnet":"10.88.0.0/16"}]]}`},
		{name: "dual-stack ip ranges", podCIDR: "10.88.0.0/16, fd00:88::/64",
			want: `{"ipRanges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"fd00:88::/64"}]]}`},
		{name: "bad pod CIDR", podCIDR: "10.88.0.0/16,nope", wantOpenErr: `"nope" is not a CIDR`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "10.conflist"), []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}`), 0o644)
			c, err := NewCNI(context.Background(), CNIConfig{ConfDir: dir, PodCIDR: tc.podCIDR})
			if tc.wantOpenErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantOpenErr) {
					t.Fatalf("NewCNI: %v, want %q", err, tc.wantOpenErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rt, err := c.runtimeConf(tc.pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("runtimeConf: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if rt.CapabilityArgs != nil {
				b, _ := json.Marshal(rt.CapabilityArgs)
				got = string(b)
			}
			if got != tc.want {
				t.Errorf("capabilities\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}
