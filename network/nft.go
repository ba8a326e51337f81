package network

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"

	"sigs.k8s.io/knftables"
)

// Maps of the host-port table: the key is what a packet to a local address
// carries, the value the pod address and port it is sent to.
const (
	mapHostPorts   = "hostports"    // proto . port : ip . port (any local address)
	mapHostIPPorts = "hostip-ports" // hostIP . proto . port : ip . port
)

// natTable is peapod's own nftables table for one bridge: masquerade for
// traffic leaving the pod CIDR, and host ports as DNAT map elements, so that
// a pod's ports are added and removed without touching any rule.
type natTable struct {
	nft    knftables.Interface
	name   string
	bridge string
	subnet *net.IPNet
}

// tableName is named from the bridge so that daemons with different bridges
// do not share rules.
func tableName(bridge string) string { return "peapod-" + bridge }

func newNATTable(bridge string, subnet *net.IPNet) (*natTable, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("the nft command is missing: install the nftables package (Debian: apt-get install nftables)")
	}
	name := tableName(bridge)
	nft, err := knftables.New(knftables.IPv4Family, name)
	if err != nil {
		return nil, fmt.Errorf("nftables unusable (needs the nf_tables kernel module and nft >= 1.0.1): %w", err)
	}
	return &natTable{nft: nft, name: name, bridge: bridge, subnet: subnet}, nil
}

// rebuild replaces the whole table in one transaction, with the host ports
// of allocs.
func (t *natTable) rebuild(ctx context.Context, allocs []*allocation) error {
	tx := t.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("peapod pod network on " + t.bridge)})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("peapod pod network on " + t.bridge)})
	tx.Add(&knftables.Map{Name: mapHostPorts, Type: "inet_proto . inet_service : ipv4_addr . inet_service"})
	tx.Add(&knftables.Map{Name: mapHostIPPorts, Type: "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"})
	tx.Add(&knftables.Chain{Name: "hostports"})
	tx.Add(&knftables.Rule{Chain: "hostports", Rule: "dnat to ip daddr . meta l4proto . th dport map @" + mapHostIPPorts})
	tx.Add(&knftables.Rule{Chain: "hostports", Rule: "dnat to meta l4proto . th dport map @" + mapHostPorts})
	// Host ports answer on local addresses only, from outside (prerouting)
	// and from the host itself, 127.0.0.1 included (output).
	tx.Add(&knftables.Chain{Name: "prerouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.DNATPriority)})
	tx.Add(&knftables.Rule{Chain: "prerouting", Rule: "fib daddr type local jump hostports"})
	tx.Add(&knftables.Chain{Name: "output", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.OutputHook), Priority: knftables.PtrTo(knftables.BaseChainPriority("-100"))})
	tx.Add(&knftables.Rule{Chain: "output", Rule: "fib daddr type local jump hostports"})
	tx.Add(&knftables.Chain{Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
	br := strconv.Quote(t.bridge)
	cidr := t.subnet.String()
	// 127.0.0.1:hostPort from the host: the pod must answer a real address.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip saddr 127.0.0.0/8 oifname " + br + " masquerade"})
	// Hairpin: a pod reaching a host port that leads back into the pod CIDR
	// must see the reply come back through the host to be un-NATed.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat ip saddr " + cidr + " oifname " + br + " masquerade"})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip saddr " + cidr + " ip daddr != " + cidr + " oifname != " + br + " masquerade"})
	for _, al := range allocs {
		for _, e := range portElements(al) {
			tx.Add(e)
		}
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program nftables table ip %s: %w", t.name, err)
	}
	return nil
}

// addPorts maps the pod's host ports.
func (t *natTable) addPorts(ctx context.Context, al *allocation) error {
	els := portElements(al)
	if len(els) == 0 {
		return nil
	}
	tx := t.nft.NewTransaction()
	for _, e := range els {
		tx.Add(e)
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("map host ports of pod %s: %w", al.Pod, err)
	}
	return nil
}

// removePorts unmaps the pod's host ports.
func (t *natTable) removePorts(ctx context.Context, al *allocation) error {
	els := portElements(al)
	if len(els) == 0 {
		return nil
	}
	tx := t.nft.NewTransaction()
	for _, e := range els {
		e.Value = nil
		tx.Delete(e)
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("unmap host ports of pod %s: %w", al.Pod, err)
	}
	return nil
}

// deleteTable removes the table (tests; the daemon keeps it for live pods).
func (t *natTable) deleteTable(ctx context.Context) error {
	tx := t.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return t.nft.Run(ctx, tx)
}

func portElements(al *allocation) []*knftables.Element {
	var out []*knftables.Element
	for _, p := range al.Ports {
		if p.HostPort == 0 {
			continue
		}
		val := []string{al.IP, strconv.Itoa(int(p.ContainerPort))}
		key := []string{p.Protocol, strconv.Itoa(int(p.HostPort))}
		if anyHostIP(p.HostIP) {
			out = append(out, &knftables.Element{Map: mapHostPorts, Key: key, Value: val})
		} else {
			out = append(out, &knftables.Element{Map: mapHostIPPorts, Key: append([]string{p.HostIP}, key...), Value: val})
		}
	}
	return out
}

func anyHostIP(ip string) bool { return ip == "" || ip == "0.0.0.0" }
