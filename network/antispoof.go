package network

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// Sets of the anti-spoofing table: which address each pod's veth may send
// from.
const (
	setVeths = "veths" // the pods' veths, the only ports checked
	setPods4 = "pods4" // veth . IPv4 address
	setPods6 = "pods6" // veth . IPv6 address (dual-stack)
)

// antispoofTable is a bridge-family table that lets a pod's veth send only
// from the pod's own addresses: IPv4 and ARP from its IPv4 address, IPv6
// from its IPv6 one or link-local (and the unspecified address of duplicate
// address detection), never a router advertisement or redirect, nothing
// of another ethertype. Without it a pod with NET_RAW (a default
// capability) could answer ARP for the gateway or another pod and take
// their traffic, send as another pod, or advertise itself as the other
// pods' IPv6 router (CVE-2020-10749). The CNI bridge plugin that
// containerd and CRI-O ship filters none of this by default.
//
// A bridge-family hook sees the frames of every bridge of the host, so
// only the veths of this daemon's pods (a set) are checked: other bridges,
// other daemons' pods and ports an admin adds are left alone, and a table
// left behind checks nothing that exists. Source MACs are not
// checked: a pod can still claim another pod's MAC to the bridge's
// forwarding table (a denial of service to that pod until it sends again).
type antispoofTable struct {
	nft    knftables.Interface
	name   string
	bridge string
}

func newAntispoofTable(bridge string) (*antispoofTable, error) {
	name := tableName(bridge)
	nft, err := knftables.New(knftables.BridgeFamily, name)
	if err != nil {
		return nil, fmt.Errorf("nftables bridge family unusable (needs nf_tables_bridge): %w", err)
	}
	return &antispoofTable{nft: nft, name: name, bridge: bridge}, nil
}

func (t *antispoofTable) rebuild(ctx context.Context, allocs []*allocation) error {
	tx := t.nft.NewTransaction()
	comment := knftables.PtrTo("peapod pod address checks on " + t.bridge)
	tx.Add(&knftables.Table{Comment: comment})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: comment})
	tx.Add(&knftables.Set{Name: setVeths, Type: "ifname"})
	tx.Add(&knftables.Set{Name: setPods4, Type: "ifname . ipv4_addr"})
	tx.Add(&knftables.Set{Name: setPods6, Type: "ifname . ipv6_addr"})
	tx.Add(&knftables.Chain{Name: "prerouting", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.BaseChainPriority("-300"))})
	for _, r := range []string{
		`iifname != @` + setVeths + ` accept`,
		`ether type arp iifname . arp saddr ip @` + setPods4 + ` accept`,
		`ether type ip iifname . ip saddr @` + setPods4 + ` accept`,
		`ether type ip6 icmpv6 type { nd-router-advert, nd-redirect } drop`,
		`ether type ip6 ip6 saddr { ::, fe80::/10 } accept`,
		`ether type ip6 iifname . ip6 saddr @` + setPods6 + ` accept`,
		`drop`,
	} {
		tx.Add(&knftables.Rule{Chain: "prerouting", Rule: r})
	}
	for _, al := range allocs {
		for _, e := range t.elements(al) {
			tx.Add(e)
		}
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program nftables table bridge %s: %w", t.name, err)
	}
	return nil
}

// elements are the pod's entries: its veth (checked) and the addresses it
// may send from. A draining pod's veth stays checked with no address, so
// that until it is gone it can send nothing, not even an ARP reply of a
// dying namespace for an address about to be handed out again.
func (t *antispoofTable) elements(al *allocation) []*knftables.Element {
	out := []*knftables.Element{{Set: setVeths, Key: []string{strconv.Quote(al.Veth)}}}
	if !al.draining {
		out = append(out, t.addressElements(al)...)
	}
	return out
}

func (t *antispoofTable) addressElements(al *allocation) []*knftables.Element {
	out := []*knftables.Element{{Set: setPods4, Key: []string{strconv.Quote(al.Veth), al.IP}}}
	if al.IP6 != "" {
		out = append(out, &knftables.Element{Set: setPods6, Key: []string{strconv.Quote(al.Veth), al.IP6}})
	}
	return out
}

// forgetAddresses stops the pod's veth sending from the pod's addresses
// (the pod stopped; its veth is still checked until remove).
func (t *antispoofTable) forgetAddresses(ctx context.Context, al *allocation) error {
	if err := t.deleteElements(al, true, false); err != nil {
		return fmt.Errorf("forget the addresses of pod %s: %w", al.Pod, err)
	}
	return nil
}

// remove forgets the pod's veth and addresses; its veth is gone or going.
func (t *antispoofTable) remove(ctx context.Context, al *allocation) error {
	// A draining pod's addresses are gone already.
	if err := t.deleteElements(al, !al.draining, true); err != nil {
		return fmt.Errorf("forget the addresses of pod %s: %w", al.Pod, err)
	}
	return nil
}

// deleteElements deletes the pod's address elements and its veth's, as
// asked, in one netlink batch: in-process rather than through an nft
// process, as StopPodSandbox and RemovePodSandbox wait for it and on a
// loaded node starting nft took longer than the rest of the stop (its exec
// and library loading, ~100 ms at load 10 on 2 cores, against ~1 ms for
// the batch).
func (t *antispoofTable) deleteElements(al *allocation, addresses, veth bool) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if err := t.queueElements(c, al, addresses, veth, false); err != nil {
		return err
	}
	return c.Flush()
}

// queueElements queues on c the addition (add) or deletion of the pod's
// address elements and its veth's, as asked; c.Flush sends them with
// whatever else c holds in one transaction.
func (t *antispoofTable) queueElements(c *nftables.Conn, al *allocation, addresses, veth, add bool) error {
	table := &nftables.Table{Name: t.name, Family: nftables.TableFamilyBridge}
	// Keys of "ifname" and "ifname . address" elements: the name
	// NUL-padded to IFNAMSIZ, then the address (both multiples of 4 bytes,
	// so nothing pads between them).
	key := func(ip net.IP) []byte {
		k := make([]byte, unix.IFNAMSIZ, unix.IFNAMSIZ+len(ip))
		copy(k, al.Veth)
		return append(k, ip...)
	}
	type element struct {
		set string
		key []byte
	}
	var els []element
	// The veth first: a batch that adds is read in order, and the rules
	// check a veth's addresses only once it is in the veths set anyway.
	if veth {
		els = append(els, element{setVeths, key(nil)})
	}
	if addresses {
		ip4 := net.ParseIP(al.IP).To4()
		if ip4 == nil {
			return fmt.Errorf("pod %s: address %q is not IPv4", al.Pod, al.IP)
		}
		els = append(els, element{setPods4, key(ip4)})
		if al.IP6 != "" {
			ip6 := net.ParseIP(al.IP6)
			if ip6 == nil {
				return fmt.Errorf("pod %s: address %q is not IPv6", al.Pod, al.IP6)
			}
			els = append(els, element{setPods6, key(ip6.To16())})
		}
	}
	for _, e := range els {
		set := &nftables.Set{Table: table, Name: e.set}
		elems := []nftables.SetElement{{Key: e.key}}
		var err error
		if add {
			err = c.SetAddElements(set, elems)
		} else {
			err = c.SetDeleteElements(set, elems)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
