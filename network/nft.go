package network

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
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
//
// A dual-stack bridge has two: "ip peapod-<bridge>" for IPv4 and its twin
// "ip6 peapod-<bridge>" for IPv6 (no 127.0.0.1-style loopback rule there:
// IPv6 has no route_localnet, so [::1]:hostPort cannot be DNATed to a pod).
type natTable struct {
	nft    knftables.Interface
	name   string
	bridge string
	subnet *net.IPNet
	v6     bool
}

// tableName is named from the bridge so that daemons with different bridges
// do not share rules.
func tableName(bridge string) string { return "peapod-" + bridge }

func newNATTable(bridge string, subnet *net.IPNet) (*natTable, error) {
	v6 := subnet.IP.To4() == nil
	family := knftables.IPv4Family
	if v6 {
		family = knftables.IPv6Family
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("the nft command is missing: install the nftables package (Debian: apt-get install nftables)")
	}
	name := tableName(bridge)
	nft, err := knftables.New(family, name)
	if err != nil {
		return nil, fmt.Errorf("nftables unusable (needs the nf_tables kernel module and nft >= 1.0.1): %w", err)
	}
	return &natTable{nft: nft, name: name, bridge: bridge, subnet: subnet, v6: v6}, nil
}

// rebuild replaces the whole table in one transaction, with the host ports
// of allocs.
func (t *natTable) rebuild(ctx context.Context, allocs []*allocation) error {
	tx := t.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("peapod pod network on " + t.bridge)})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("peapod pod network on " + t.bridge)})
	addrType, ipKw := "ipv4_addr", "ip"
	if t.v6 {
		addrType, ipKw = "ipv6_addr", "ip6"
	}
	tx.Add(&knftables.Map{Name: mapHostPorts, Type: "inet_proto . inet_service : " + addrType + " . inet_service"})
	tx.Add(&knftables.Map{Name: mapHostIPPorts, Type: addrType + " . inet_proto . inet_service : " + addrType + " . inet_service"})
	tx.Add(&knftables.Chain{Name: "hostports"})
	tx.Add(&knftables.Rule{Chain: "hostports", Rule: "dnat to " + ipKw + " daddr . meta l4proto . th dport map @" + mapHostIPPorts})
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
	if !t.v6 {
		tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip saddr 127.0.0.0/8 oifname " + br + " masquerade"})
		// route_localnet on the bridge (for the rule above) also stops the
		// kernel dropping what a pod sends to or from 127.0.0.0/8: with
		// NET_RAW a pod would reach the node's loopback-only services, or
		// pass as local to them (CVE-2020-8558). Nothing legitimate
		// arrives so: the replies of 127.0.0.1:hostPort come addressed to
		// the bridge and are un-NATed after this hook (raw, before
		// conntrack).
		tx.Add(&knftables.Chain{Name: "localnet", Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.RawPriority)})
		tx.Add(&knftables.Rule{Chain: "localnet", Rule: "iifname " + br + " ip daddr 127.0.0.0/8 drop"})
		tx.Add(&knftables.Rule{Chain: "localnet", Rule: "iifname " + br + " ip saddr 127.0.0.0/8 drop"})
	}
	// Hairpin: a pod reaching a host port that leads back into the pod CIDR
	// must see the reply come back through the host to be un-NATed.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ct status dnat " + ipKw + " saddr " + cidr + " oifname " + br + " masquerade"})
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: ipKw + " saddr " + cidr + " " + ipKw + " daddr != " + cidr + " oifname != " + br + " masquerade"})
	for _, al := range allocs {
		for _, e := range t.portElements(al) {
			tx.Add(e)
		}
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program nftables table %s %s: %w", ipKw, t.name, err)
	}
	return nil
}

// removePorts unmaps the pod's host ports, through one netlink batch
// in-process rather than an nft process: StopPodSandbox waits for it (see
// antispoofTable.deleteElements).
func (t *natTable) removePorts(ctx context.Context, al *allocation) error {
	if len(t.portElements(al)) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err == nil {
		err = t.queuePorts(c, al, false)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("unmap host ports of pod %s: %w", al.Pod, err)
	}
	return nil
}

// queuePorts queues on c the addition (add) or deletion of the pod's
// host-port map elements; c.Flush sends them with whatever else c holds
// in one transaction. The elements of a map go in one message: the kernel
// acknowledges each message, and a pod's 1,024 host ports in a message
// each overflowed the socket's receive buffer with acknowledgements
// (ENOBUFS) after the kernel had committed the batch, so a setup taken
// for failed left its mappings behind, pointing at an address given to
// the next pod.
func (t *natTable) queuePorts(c *nftables.Conn, al *allocation, add bool) error {
	family := nftables.TableFamilyIPv4
	if t.v6 {
		family = nftables.TableFamilyIPv6
	}
	table := &nftables.Table{Name: t.name, Family: family}
	byMap := map[string][]nftables.SetElement{}
	var maps []string
	for _, e := range t.portElements(al) {
		key, err := concatKey(e.Key)
		if err != nil {
			return err
		}
		el := nftables.SetElement{Key: key}
		if add {
			if el.Val, err = concatKey(e.Value); err != nil {
				return err
			}
		}
		if byMap[e.Map] == nil {
			maps = append(maps, e.Map)
		}
		byMap[e.Map] = append(byMap[e.Map], el)
	}
	for _, m := range maps {
		set := &nftables.Set{Table: table, Name: m, IsMap: true}
		var err error
		if add {
			err = c.SetAddElements(set, byMap[m])
		} else {
			err = c.SetDeleteElements(set, byMap[m])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// concatKey encodes the key (or value) of a host-port map element as the
// kernel holds it: each field (address, inet_proto, inet_service) in network
// order, padded with zeros to a multiple of 4 bytes.
func concatKey(fields []string) ([]byte, error) {
	var out []byte
	for _, f := range fields {
		var b []byte
		if ip := net.ParseIP(f); ip != nil {
			if b = ip.To4(); b == nil {
				b = ip.To16()
			}
		} else if proto, ok := map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}[f]; ok {
			b = []byte{proto}
		} else if port, err := strconv.ParseUint(f, 10, 16); err == nil {
			b = []byte{byte(port >> 8), byte(port)}
		} else {
			return nil, fmt.Errorf("map key field %q", f)
		}
		out = append(out, b...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	return out, nil
}

// deleteTable removes the table (tests; the daemon keeps it for live pods).
func (t *natTable) deleteTable(ctx context.Context) error {
	tx := t.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return t.nft.Run(ctx, tx)
}

// portElements are the map elements of the pod's host ports in this
// table's family: a host port on any address is in both tables of a
// dual-stack bridge, one on a given host IP in that IP's table only.
func (t *natTable) portElements(al *allocation) []*knftables.Element {
	var out []*knftables.Element
	if al.draining {
		return nil // unmapped when the pod stopped
	}
	podIP := al.IP
	if t.v6 {
		podIP = al.IP6
	}
	if podIP == "" { // set up before pod_cidr had a v6 range
		return nil
	}
	for _, p := range al.Ports {
		if p.HostPort == 0 {
			continue
		}
		if !anyHostIP(p.HostIP) && (net.ParseIP(p.HostIP).To4() == nil) != t.v6 {
			continue
		}
		val := []string{podIP, strconv.Itoa(int(p.ContainerPort))}
		key := []string{p.Protocol, strconv.Itoa(int(p.HostPort))}
		if anyHostIP(p.HostIP) {
			out = append(out, &knftables.Element{Map: mapHostPorts, Key: key, Value: val})
		} else {
			out = append(out, &knftables.Element{Map: mapHostIPPorts, Key: append([]string{p.HostIP}, key...), Value: val})
		}
	}
	return out
}

func anyHostIP(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }
