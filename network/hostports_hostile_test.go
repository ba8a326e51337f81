package network

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// mapElements counts the elements of the host-port maps of the bridge's
// ip table.
func mapElements(t *testing.T, tb *testBridge) int {
	t.Helper()
	n := 0
	for _, m := range []string{mapHostPorts, mapHostIPPorts} {
		out, err := exec.Command("nft", "-j", "list", "map", "ip", tableName(tb.name), m).Output()
		if err != nil {
			t.Fatalf("nft list map %s: %v", m, err)
		}
		var doc struct {
			Nftables []map[string]json.RawMessage `json:"nftables"`
		}
		json.Unmarshal(out, &doc)
		for _, o := range doc.Nftables {
			if raw, ok := o["map"]; ok {
				var mp struct {
					Elem []json.RawMessage `json:"elem"`
				}
				json.Unmarshal(raw, &mp)
				n += len(mp.Elem)
			}
		}
	}
	return n
}

// TestBridgeHostilePortMappings: what a pod author controls in hostPorts.
// 1,024 host ports (the most a request may carry) go in one netlink batch
// whole; a second pod claiming one of them is refused before anything is
// made, and neither its failed setup nor its teardown touches the first
// pod's mappings; the first pod's teardown removes all of its own.
func TestBridgeHostilePortMappings(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	const first, count = 42000, 1024
	var ports []PortMapping
	for i := int32(0); i < count; i++ {
		proto := []string{"tcp", "udp", "sctp"}[i%3]
		ports = append(ports, PortMapping{Protocol: proto, ContainerPort: 80, HostPort: first + i})
	}
	a := Pod{ID: "pod-many-" + randHex(8), NetNS: newNetNS(t), Ports: ports}
	if _, err := tb.SetupPod(ctx, a); err != nil {
		spoof, _ := exec.Command("nft", "list", "table", "bridge", tableName(tb.name)).CombinedOutput()
		t.Fatalf("SetupPod with %d host ports: %v; left: %d host-port elements, anti-spoof element of its veth: %v", count, err, mapElements(t, tb), strings.Contains(string(spoof), vethName(a.ID)))
	}
	t.Cleanup(func() { tb.TeardownPod(ctx, a) })
	if n := mapElements(t, tb); n != count {
		t.Fatalf("%d host-port elements after SetupPod, want %d", n, count)
	}

	b := Pod{ID: "pod-thief-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: 1},
		{Protocol: "udp", ContainerPort: 80, HostPort: first + 1, HostIP: "127.0.0.1"},
	}}
	_, err := tb.SetupPod(ctx, b)
	if !errors.Is(err, ErrPortConflict) || !strings.Contains(err.Error(), "already mapped to pod "+a.ID) {
		t.Fatalf("SetupPod of a pod claiming a taken host port = %v, want refused naming %s", err, a.ID)
	}
	if err := tb.TeardownPod(ctx, b); err != nil {
		t.Fatalf("TeardownPod of the refused pod: %v", err)
	}
	if finish, err := tb.DetachPod(ctx, b); err != nil || finish != nil {
		t.Fatalf("DetachPod of the refused pod: %v, %v", finish != nil, err)
	}
	if n := mapElements(t, tb); n != count {
		t.Fatalf("%d host-port elements after the refused pod's setup and teardown, want %d", n, count)
	}

	dup := Pod{ID: "pod-dup-" + randHex(8), NetNS: newNetNS(t), Ports: []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: 41000},
		{Protocol: "tcp", ContainerPort: 81, HostPort: 41000, HostIP: "0.0.0.0"},
	}}
	if _, err := tb.SetupPod(ctx, dup); !errors.Is(err, ErrPortConflict) || !strings.Contains(err.Error(), "mapped twice") {
		t.Errorf("SetupPod of a pod mapping a host port twice = %v, want refused", err)
	}
	tb.TeardownPod(ctx, dup)

	finish, err := tb.DetachPod(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if n := mapElements(t, tb); n != 0 {
		t.Errorf("%d host-port elements after DetachPod, want 0", n)
	}
	if finish != nil {
		if err := finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
