package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BridgeConfig configures the built-in network.
type BridgeConfig struct {
	Name     string // bridge device, at most 15 bytes
	PodCIDR  string // IPv4; the bridge gets its first address, pods the rest
	StateDir string // where IP allocations persist (one file per pod)
	Logger   *slog.Logger
}

// Bridge is the built-in pod network: a Linux bridge whose address is the
// pods' gateway, one veth pair per pod, IPs from the pod CIDR, masquerade
// for traffic leaving it, and host ports as DNAT, all in peapod's own
// nftables table. It needs no plugin and no config.
type Bridge struct {
	cfg     BridgeConfig
	log     *slog.Logger
	subnet  *net.IPNet
	gateway net.IP

	mu   sync.Mutex // serialises setup, teardown and re-initialisation
	ipam *ipam
	nat  *natTable // nil until the host side is set up
}

// NewBridge checks the config and sets up the host side: the bridge, its
// address, forwarding and the nftables table. An error here is a config
// error. A host side that cannot be set up yet (nft missing, say) is not:
// it is retried on every Ready and SetupPod, and Ready says what to fix.
func NewBridge(ctx context.Context, cfg BridgeConfig) (*Bridge, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" || len(cfg.Name) > unix.IFNAMSIZ-1 || strings.ContainsAny(cfg.Name, "/ \t\n") {
		return nil, fmt.Errorf("bridge %q: must be a device name of 1 to 15 characters without '/' or spaces", cfg.Name)
	}
	subnet, err := ParsePodCIDR(cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	if err := checkOverlap(cfg.Name, subnet); err != nil {
		return nil, err
	}
	a, err := openIPAM(cfg.StateDir, subnet)
	if err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, log: cfg.Logger, subnet: subnet, gateway: gatewayOf(subnet), ipam: a}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.ensureHost(ctx); err != nil {
		b.log.Warn("pod network not ready", "bridge", cfg.Name, "err", err)
	}
	return b, nil
}

// ParsePodCIDR accepts an IPv4 network such as 10.88.0.0/16, from /8 to /28.
func ParsePodCIDR(s string) (*net.IPNet, error) {
	ip, subnet, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("pod_cidr %q: not a CIDR such as 10.88.0.0/16", s)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("pod_cidr %q: only IPv4 is built yet", s)
	}
	if !ip.Equal(subnet.IP) {
		return nil, fmt.Errorf("pod_cidr %q has host bits set: did you mean %s?", s, subnet)
	}
	if ones, _ := subnet.Mask.Size(); ones < 8 || ones > 28 {
		return nil, fmt.Errorf("pod_cidr %q: prefix must be /8 to /28", s)
	}
	subnet.IP = subnet.IP.To4()
	return subnet, nil
}

// checkOverlap refuses a pod CIDR that overlaps a route of another device:
// pods would shadow, or be shadowed by, that network.
func checkOverlap(bridge string, subnet *net.IPNet) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	brIndex := -1
	if l, err := netlink.LinkByName(bridge); err == nil {
		brIndex = l.Attrs().Index
	}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == brIndex {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 { // a default route overlaps everything
			continue
		}
		if r.Dst.Contains(subnet.IP) || subnet.Contains(r.Dst.IP) {
			dev := strconv.Itoa(r.LinkIndex)
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			return fmt.Errorf("pod_cidr %s overlaps %s on %s: choose a pod_cidr no host network uses", subnet, r.Dst, dev)
		}
	}
	return nil
}

// Ready reports why pods cannot get a network, or nil. It retries setting
// up the host side, so a fixed problem clears without a restart.
func (b *Bridge) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.bridgeLink(context.Background())
	return err
}

// bridgeLink returns the bridge, setting up the host side first if it is
// missing (first start, failed start, or the bridge was deleted).
func (b *Bridge) bridgeLink(ctx context.Context) (netlink.Link, error) {
	if b.nat != nil {
		if l, err := netlink.LinkByName(b.cfg.Name); err == nil && l.Attrs().Flags&net.FlagUp != 0 {
			return l, nil
		}
	}
	if err := b.ensureHost(ctx); err != nil {
		return nil, err
	}
	return netlink.LinkByName(b.cfg.Name)
}

// ensureHost creates the bridge with the gateway address, turns on
// forwarding and rebuilds the nftables table from the allocations.
func (b *Bridge) ensureHost(ctx context.Context) error {
	link, err := netlink.LinkByName(b.cfg.Name)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		la := netlink.NewLinkAttrs()
		la.Name = b.cfg.Name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s (needs CAP_NET_ADMIN and the bridge kernel module): %w", b.cfg.Name, err)
		}
		link, err = netlink.LinkByName(b.cfg.Name)
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", b.cfg.Name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("device %s exists and is a %s, not a bridge: set another bridge name", b.cfg.Name, link.Type())
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", b.cfg.Name, err)
	}
	want := &net.IPNet{IP: b.gateway, Mask: b.subnet.Mask}
	have := false
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			have = true
		} else {
			return fmt.Errorf("bridge %s already has address %s, not %s: another daemon uses it, or pod_cidr changed (delete the bridge with `ip link del %[1]s` once no pod uses it)",
				b.cfg.Name, a.IPNet, want)
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to bridge %s: %w", want, b.cfg.Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", b.cfg.Name, err)
	}
	// Pods reach other networks through the host. route_localnet lets
	// 127.0.0.1:hostPort be DNATed out of this bridge, and only this one.
	for path, val := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                             "1",
		"/proc/sys/net/ipv4/conf/" + b.cfg.Name + "/route_localnet": "1",
	} {
		if err := writeSysctl(path, val); err != nil {
			return err
		}
	}
	if b.nat == nil {
		nat, err := newNATTable(b.cfg.Name, b.subnet)
		if err != nil {
			return err
		}
		b.nat = nat
	}
	if err := b.nat.rebuild(ctx, b.ipam.allocations()); err != nil {
		b.nat = nil
		return err
	}
	return nil
}

func writeSysctl(path, val string) error {
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == val {
		return nil
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("set %s=%s (is /proc/sys writable?): %w", strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."), val, err)
	}
	return nil
}

// vethName is the host end of the pod's veth pair, derived from the pod ID
// so that teardown finds it without a record.
func vethName(podID string) string {
	h := sha256.Sum256([]byte(podID))
	return "pp" + hex.EncodeToString(h[:6])
}

// SetupPod gives the pod eth0 on the bridge, an address, a default route
// and its host ports. On error nothing of the pod is left.
func (b *Bridge) SetupPod(ctx context.Context, pod Pod) (res Result, err error) {
	ports, err := checkPorts(pod.Ports)
	if err != nil {
		return Result{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	br, err := b.bridgeLink(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("pod network not ready: %w", err)
	}
	if al, ok := b.ipam.byPod[pod.ID]; ok { // set up already
		return Result{IPs: []net.IP{net.ParseIP(al.IP)}}, nil
	}
	if err := b.portConflict(pod.ID, ports); err != nil {
		return Result{}, err
	}
	veth := vethName(pod.ID)
	al, err := b.ipam.allocate(pod.ID, veth, ports)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			b.ipam.release(pod.ID)
		}
	}()
	if err := b.attach(pod.NetNS, br, veth, net.ParseIP(al.IP).To4()); err != nil {
		deleteLink(veth)
		return Result{}, err
	}
	if err := b.nat.addPorts(ctx, al); err != nil {
		deleteLink(veth)
		return Result{}, err
	}
	return Result{IPs: []net.IP{net.ParseIP(al.IP)}}, nil
}

// attach creates the veth pair with its peer already in the pod's netns
// (one netlink call, no rename), then addresses it from inside.
func (b *Bridge) attach(netnsPath string, br netlink.Link, veth string, ip net.IP) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = veth
	la.MasterIndex = br.Attrs().Index
	v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s: %w", veth, err)
	}
	// With br_netfilter, a pod reaching its own host port is DNATed while
	// being bridged and must go back out the port it came in on.
	if err := netlink.LinkSetHairpin(v, true); err != nil {
		return fmt.Errorf("hairpin on veth %s: %w", veth, err)
	}
	if err := netlink.LinkSetUp(v); err != nil {
		return fmt.Errorf("bring up veth %s: %w", veth, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, netnsPath, err)
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: b.subnet.Mask}}); err != nil {
				return fmt.Errorf("add %s to eth0 in %s: %w", ip, netnsPath, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up %s in %s: %w", name, netnsPath, err)
		}
		if name == "eth0" {
			if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: b.gateway}); err != nil {
				return fmt.Errorf("add default route via %s in %s: %w", b.gateway, netnsPath, err)
			}
		}
	}
	return nil
}

// checkPorts validates and normalises the pod's host ports; mappings
// without a host port are not mapped (kubelet sends them for information).
func checkPorts(in []PortMapping) ([]PortMapping, error) {
	var out []PortMapping
	for _, p := range in {
		if p.HostPort == 0 {
			continue
		}
		p.Protocol = strings.ToLower(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
			return nil, fmt.Errorf("port mapping %d: protocol %q is not tcp, udp or sctp", p.HostPort, p.Protocol)
		}
		if p.HostPort < 1 || p.HostPort > 65535 || p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("port mapping %d->%d: ports must be 1 to 65535", p.HostPort, p.ContainerPort)
		}
		if !anyHostIP(p.HostIP) {
			ip := net.ParseIP(p.HostIP)
			if ip == nil || ip.To4() == nil {
				return nil, fmt.Errorf("port mapping %d: host IP %q is not an IPv4 address", p.HostPort, p.HostIP)
			}
			p.HostIP = ip.To4().String()
		} else {
			p.HostIP = ""
		}
		out = append(out, p)
	}
	return out, nil
}

// portConflict names the pod that already holds one of ports.
func (b *Bridge) portConflict(pod string, ports []PortMapping) error {
	for i, p := range ports {
		for _, q := range ports[:i] {
			if portsClash(p, q) {
				return fmt.Errorf("host port %s/%d is mapped twice in the pod's config", p.Protocol, p.HostPort)
			}
		}
		for _, al := range b.ipam.byPod {
			for _, q := range al.Ports {
				if al.Pod != pod && portsClash(p, q) {
					return fmt.Errorf("host port %s %s:%d is already mapped to pod %s", p.Protocol, orAny(p.HostIP), p.HostPort, al.Pod)
				}
			}
		}
	}
	return nil
}

func portsClash(p, q PortMapping) bool {
	return p.Protocol == q.Protocol && p.HostPort == q.HostPort &&
		(p.HostIP == "" || q.HostIP == "" || p.HostIP == q.HostIP)
}

func orAny(ip string) string {
	if ip == "" {
		return "*"
	}
	return ip
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// TeardownPod removes the pod's host ports and veth and frees its IP. It
// works whether or not the netns still exists, and tearing down a pod that
// has no network is not an error.
func (b *Bridge) TeardownPod(ctx context.Context, pod Pod) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.teardown(ctx, pod.ID)
}

func (b *Bridge) teardown(ctx context.Context, podID string) error {
	al, ok := b.ipam.byPod[podID]
	veth := vethName(podID)
	if ok {
		veth = al.Veth
		if b.nat != nil && len(al.Ports) > 0 {
			if err := b.nat.removePorts(ctx, al); err != nil {
				b.log.Warn("unmap host ports; rebuilding the table", "pod", podID, "err", err)
				b.nat.rebuild(ctx, b.allocationsExcept(podID))
			}
		}
	}
	if err := deleteLink(veth); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	return b.ipam.release(podID)
}

func (b *Bridge) allocationsExcept(pod string) []*allocation {
	var out []*allocation
	for _, al := range b.ipam.byPod {
		if al.Pod != pod {
			out = append(out, al)
		}
	}
	return out
}

// Reconcile releases what pods that are not in live still hold: IPs, veths
// on the bridge and host ports. The daemon calls it at start, so a crash
// leaks nothing that a restart does not clean up.
func (b *Bridge) Reconcile(ctx context.Context, live []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	isLive := map[string]bool{}
	for _, id := range live {
		isLive[id] = true
	}
	var errs []error
	for _, al := range b.ipam.allocations() {
		if !isLive[al.Pod] {
			b.log.Info("releasing network of a pod that is gone", "pod", al.Pod, "ip", al.IP)
			if err := deleteLink(al.Veth); err != nil {
				errs = append(errs, err)
			}
			if err := b.ipam.release(al.Pod); err != nil {
				errs = append(errs, err)
			}
		}
	}
	liveVeths := map[string]bool{}
	for _, al := range b.ipam.byPod {
		liveVeths[al.Veth] = true
	}
	if br, err := netlink.LinkByName(b.cfg.Name); err == nil {
		links, _ := netlink.LinkList()
		for _, l := range links {
			name := l.Attrs().Name
			if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" && strings.HasPrefix(name, "pp") && !liveVeths[name] {
				b.log.Info("deleting a veth no pod owns", "veth", name)
				if err := deleteLink(name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if b.nat != nil {
		if err := b.nat.rebuild(ctx, b.ipam.allocations()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
