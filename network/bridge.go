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
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BridgeConfig configures the built-in network.
type BridgeConfig struct {
	Name string // bridge device, at most 15 bytes
	// PodCIDR is IPv4 ("10.88.0.0/16") or dual-stack, IPv4 and IPv6
	// comma-separated ("10.88.0.0/16,fd00:88::/64"). The bridge gets the
	// first address of each, pods the rest; a pod's v6 address has the host
	// part of its v4 one.
	PodCIDR  string
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
	// Dual-stack: the v6 range and the bridge's v6 address; nil if none.
	subnet6  *net.IPNet
	gateway6 net.IP

	mu   sync.Mutex // serialises setup, teardown and re-initialisation
	ipam *ipam
	nat  *natTable // nil until the host side is set up
	nat6 *natTable // dual-stack: the ip6 twin of nat
	// spoof lets each pod's veth send only from the pod's addresses; set
	// up with nat.
	spoof *antispoofTable

	// teardownOnly: opened to release pods of a backend that is not the
	// pod network now (teardown.go); it sets nothing up on the host.
	teardownOnly bool
}

// NewBridge checks the config and sets up the host side: the bridge, its
// address, forwarding and the nftables table. An error here is a config
// error. A host side that cannot be set up yet (nft missing, say) is not:
// it is retried on every Ready and SetupPod, and Ready says what to fix.
func NewBridge(ctx context.Context, cfg BridgeConfig) (*Bridge, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := CheckBridgeName(cfg.Name); err != nil {
		return nil, err
	}
	subnet, subnet6, err := ParsePodCIDRs(cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	// A pod_cidr that overlaps a host network is not fatal here: the
	// daemon must still manage (stop, remove) the pods it runs. ensureHost
	// refuses it, so the network is not ready and says why, like a bridge
	// whose address does not match.
	var warn func(string, ...any)
	if cfg.Logger != nil {
		warn = cfg.Logger.Warn
	}
	a, err := openIPAM(cfg.StateDir, subnet, subnet6, warn)
	if err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, log: cfg.Logger, subnet: subnet, gateway: gatewayOf(subnet), subnet6: subnet6, ipam: a}
	if subnet6 != nil {
		b.gateway6 = ip6At(subnet6, 1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.ensureHost(ctx); err != nil {
		b.log.Warn("pod network not ready", "bridge", cfg.Name, "err", err)
	}
	return b, nil
}

// CheckBridgeName refuses what cannot be a network device name.
func CheckBridgeName(name string) error {
	if name == "" || len(name) > unix.IFNAMSIZ-1 || strings.ContainsAny(name, "/ \t\n:") {
		return fmt.Errorf("bridge %q: must be a device name of 1 to 15 characters without '/', ':' or spaces", name)
	}
	return nil
}

// CheckPodCIDR reads pod_cidr as backend does: the built-in network's
// ranges (ParsePodCIDRs), or CNI's ipRanges.
func CheckPodCIDR(backend, podCIDR string) error {
	if backend == BackendCNI {
		_, err := parseIPRanges(podCIDR)
		return err
	}
	_, _, err := ParsePodCIDRs(podCIDR)
	return err
}

// CheckHostOverlap refuses a built-in pod_cidr that overlaps a network of
// the host other than bridge's, as NewBridge does.
func CheckHostOverlap(bridge, podCIDR string) error {
	v4, v6, err := ParsePodCIDRs(podCIDR)
	if err != nil {
		return err
	}
	for _, n := range []*net.IPNet{v4, v6} {
		if n != nil {
			if err := checkOverlap(bridge, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// ParsePodCIDRs accepts an IPv4 network, or an IPv4 and an IPv6 network
// comma-separated (dual-stack: "10.88.0.0/16,fd00:88::/64"). The IPv6 one
// must hold at least as many addresses as the IPv4 one, as pods get the
// same host part in both; /64 to /120. IPv6 alone is not built yet.
func ParsePodCIDRs(s string) (v4, v6 *net.IPNet, err error) {
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		ip, _, perr := net.ParseCIDR(part)
		if perr != nil || ip.To4() != nil {
			if v4 != nil {
				return nil, nil, fmt.Errorf("pod_cidr %q: more than one IPv4 CIDR", s)
			}
			if v4, err = ParsePodCIDR(part); err != nil {
				return nil, nil, err
			}
			continue
		}
		if v6 != nil {
			return nil, nil, fmt.Errorf("pod_cidr %q: more than one IPv6 CIDR", s)
		}
		if v6, err = parsePodCIDR6(part); err != nil {
			return nil, nil, err
		}
	}
	if v4 == nil {
		return nil, nil, fmt.Errorf("pod_cidr %q: an IPv4 CIDR is needed (IPv6-only is not built yet; dual-stack is, e.g. \"10.88.0.0/16,fd00:88::/64\")", s)
	}
	if v6 != nil {
		ones4, _ := v4.Mask.Size()
		ones6, _ := v6.Mask.Size()
		if 128-ones6 < 32-ones4 {
			return nil, nil, fmt.Errorf("pod_cidr %q: the IPv6 range /%d is smaller than the IPv4 range /%d (pods get the same host part in both): use at most /%d", s, ones6, ones4, 96+ones4)
		}
	}
	return v4, v6, nil
}

func parsePodCIDR6(s string) (*net.IPNet, error) {
	ip, subnet, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("pod_cidr %q: not a CIDR such as fd00:88::/64", s)
	}
	if !ip.Equal(subnet.IP) {
		return nil, fmt.Errorf("pod_cidr %q has host bits set: did you mean %s?", s, subnet)
	}
	if ones, _ := subnet.Mask.Size(); ones < 64 || ones > 120 {
		return nil, fmt.Errorf("pod_cidr %q: IPv6 prefix must be /64 to /120", s)
	}
	if ip.IsLinkLocalUnicast() || ip.IsLoopback() || ip.IsMulticast() {
		return nil, fmt.Errorf("pod_cidr %q: not a unicast range (use a ULA such as fd00:88::/64, or a global one)", s)
	}
	return subnet, nil
}

// ParsePodCIDR accepts an IPv4 network such as 10.88.0.0/16, from /8 to /28.
func ParsePodCIDR(s string) (*net.IPNet, error) {
	ip, subnet, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("pod_cidr %q: not a CIDR such as 10.88.0.0/16", s)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("pod_cidr %q: not an IPv4 CIDR (IPv6 only with an IPv4 one, comma-separated)", s)
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
	family := netlink.FAMILY_V4
	if subnet.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteList(nil, family)
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
	if b.teardownOnly {
		return nil
	}
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
	for _, n := range []*net.IPNet{b.subnet, b.subnet6} {
		if n != nil {
			if err := checkOverlap(b.cfg.Name, n); err != nil {
				return err
			}
		}
	}
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
	if b.subnet6 != nil {
		if err := b.ensureAddr6(link); err != nil {
			return err
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
	// Dual-stack: pods' v6 traffic to other networks is routed too. This
	// makes the host an IPv6 router: interfaces with accept_ra=1 stop
	// taking router advertisements (set accept_ra=2 where the host relies
	// on them). Only when pod_cidr has a v6 range.
	if b.subnet6 != nil {
		if err := writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
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
	if b.subnet6 != nil {
		nat6, err := newNATTable(b.cfg.Name, b.subnet6)
		if err == nil {
			err = nat6.rebuild(ctx, b.ipam.allocations())
		}
		if err != nil {
			b.nat = nil
			return err
		}
		b.nat6 = nat6
	}
	if b.spoof == nil {
		spoof, err := newAntispoofTable(b.cfg.Name)
		if err != nil {
			b.nat = nil
			return err
		}
		b.spoof = spoof
	}
	if err := b.spoof.rebuild(ctx, b.ipam.allocations()); err != nil {
		b.nat = nil
		return err
	}
	return nil
}

// ensureAddr6 gives the bridge the first address of the v6 range, without
// duplicate address detection (the range is ours; DAD would delay pods'
// first packets by a second).
func (b *Bridge) ensureAddr6(link netlink.Link) error {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", b.cfg.Name, err)
	}
	want := &net.IPNet{IP: b.gateway6, Mask: b.subnet6.Mask}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if a.IPNet.String() == want.String() {
			return nil
		}
		return fmt.Errorf("bridge %s already has address %s, not %s: another daemon uses it, or pod_cidr changed (delete the bridge with `ip link del %[1]s` once no pod uses it)",
			b.cfg.Name, a.IPNet, want)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: want, Flags: unix.IFA_F_NODAD}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to bridge %s: %w", want, b.cfg.Name, err)
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
	if b.teardownOnly {
		return Result{}, fmt.Errorf("the built-in network is not the pod network now: it only tears down the pods it set up")
	}
	ports, err := checkPorts(pod.Ports, b.subnet6 != nil)
	if err != nil {
		return Result{}, err
	}
	tBegin := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	tLocked := time.Now()
	br, err := b.bridgeLink(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("pod network not ready: %w", err)
	}
	if al, ok := b.ipam.byPod[pod.ID]; ok { // set up already
		return resultOf(al), nil
	}
	if err := b.portConflict(pod.ID, ports); err != nil {
		return Result{}, err
	}
	veth := vethName(pod.ID)
	t0 := time.Now()
	al, err := b.ipam.reserve(pod.ID, veth, ports)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			b.ipam.release(pod.ID)
		}
	}()
	// The address record (two fsyncs) is written while the veth is made
	// (netlink): neither needs the other, and each took a few ms, up to
	// tens on a loaded node. A crash with the veth made and no record
	// leaves a veth no record owns, which Reconcile deletes at the start.
	recorded := make(chan error, 1)
	var tRecord time.Time
	go func() {
		err := b.ipam.write(al)
		tRecord = time.Now()
		recorded <- err
	}()
	attachErr := b.attach(pod.NetNS, br, veth, al)
	tAttach := time.Now()
	if err := errors.Join(attachErr, <-recorded); err != nil {
		deleteLink(veth)
		return Result{}, err
	}
	tBoth := time.Now()
	if err := b.addElements(al); err != nil {
		deleteLink(veth)
		return Result{}, err
	}
	b.log.Debug("setup pod network phases", "pod", pod.ID, "lock", tLocked.Sub(tBegin), "bridge", t0.Sub(tLocked),
		"record", tRecord.Sub(t0), "veth", tAttach.Sub(t0), "nft_elements", time.Since(tBoth))
	return resultOf(al), nil
}

// addElements lets the pod's veth send from its addresses and maps its
// host ports: the elements of every table in one netlink transaction, all
// or none, in-process (RunPodSandbox waits for it; an nft process cost
// ~100 ms on a loaded node, the batch ~1 ms). Nothing later in SetupPod
// can fail, so there is nothing to undo once it succeeded.
func (b *Bridge) addElements(al *allocation) error {
	c, err := nftables.New()
	if err == nil {
		err = b.spoof.queueElements(c, al, true, true, true)
	}
	for _, nat := range []*natTable{b.nat, b.nat6} {
		if err == nil && nat != nil {
			err = nat.queuePorts(c, al, true)
		}
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("allow the addresses and map the host ports of pod %s: %w", al.Pod, err)
	}
	return nil
}

// resultOf is the pod's IPv4 address, then its IPv6 one if dual-stack.
func resultOf(al *allocation) Result {
	res := Result{IPs: []net.IP{net.ParseIP(al.IP)}, Backend: BackendBuiltin}
	if al.IP6 != "" {
		res.IPs = append(res.IPs, net.ParseIP(al.IP6))
	}
	return res
}

// attach creates the veth pair with its peer already in the pod's netns
// (one netlink call, no rename), then addresses it from inside.
func (b *Bridge) attach(netnsPath string, br netlink.Link, veth string, al *allocation) error {
	ip := net.ParseIP(al.IP).To4()
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = veth
	la.MasterIndex = br.Attrs().Index
	la.Flags = net.FlagUp // the host end is created up: one netlink round trip less
	v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s: %w", veth, err)
	}
	// With br_netfilter, a pod reaching its own host port is DNATed while
	// being bridged and must go back out the port it came in on.
	if err := netlink.LinkSetHairpin(v, true); err != nil {
		return fmt.Errorf("hairpin on veth %s: %w", veth, err)
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
			if al.IP6 != "" && b.subnet6 != nil {
				ip6 := net.ParseIP(al.IP6)
				if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip6, Mask: b.subnet6.Mask}, Flags: unix.IFA_F_NODAD}); err != nil {
					return fmt.Errorf("add %s to eth0 in %s: %w", ip6, netnsPath, err)
				}
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up %s in %s: %w", name, netnsPath, err)
		}
		if name == "eth0" {
			if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: b.gateway}); err != nil {
				return fmt.Errorf("add default route via %s in %s: %w", b.gateway, netnsPath, err)
			}
			if al.IP6 != "" && b.subnet6 != nil {
				if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: b.gateway6}); err != nil {
					return fmt.Errorf("add default route via %s in %s: %w", b.gateway6, netnsPath, err)
				}
			}
		}
	}
	return nil
}

// checkPorts validates and normalises the pod's host ports; mappings
// without a host port are not mapped (kubelet sends them for information).
func checkPorts(in []PortMapping, v6 bool) ([]PortMapping, error) {
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
			switch {
			case ip == nil:
				return nil, fmt.Errorf("port mapping %d: host IP %q is not an IP address", p.HostPort, p.HostIP)
			case ip.To4() == nil && !v6:
				return nil, fmt.Errorf("port mapping %d: host IP %q is IPv6 and pod_cidr has no IPv6 range", p.HostPort, p.HostIP)
			}
			p.HostIP = ip.String()
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
				return fmt.Errorf("%w: host port %s/%d is mapped twice in the pod's config", ErrPortConflict, p.Protocol, p.HostPort)
			}
		}
		for _, al := range b.ipam.byPod {
			if al.draining {
				continue // its ports were unmapped when it stopped
			}
			for _, q := range al.Ports {
				if al.Pod != pod && portsClash(p, q) {
					return fmt.Errorf("%w: host port %s %s:%d is already mapped to pod %s", ErrPortConflict, p.Protocol, orAny(p.HostIP), p.HostPort, al.Pod)
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

// DetachPod is the part of the teardown a stopped pod must not outlive:
// its host ports are unmapped and its veth may no longer send from the
// pod's addresses. What is left, deleting the veth (the kernel's device
// unregistration, RCU grace periods: most of the teardown's time) and then
// freeing the address, is the returned finish, which the caller runs once
// the pod's processes are dead, after its stop returned. Until finish
// returns the address stays taken, so no new pod gets it while a veth (or
// a dying namespace behind it) still holds it; a crash before then is
// finished by Reconcile at the next start, which releases stopped pods.
// finish is nil when nothing is left; called again, DetachPod returns the
// pending finish again.
func (b *Bridge) DetachPod(ctx context.Context, pod Pod) (finish func(context.Context) error, err error) {
	if b.teardownOnly {
		return nil, b.TeardownPod(ctx, pod)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	al, ok := b.ipam.byPod[pod.ID]
	if !ok {
		// No address: at most a veth of a setup cut short, found by name.
		if err := deleteLink(vethName(pod.ID)); err != nil {
			return nil, fmt.Errorf("tear down network of pod %s: %w", pod.ID, err)
		}
		return nil, nil
	}
	if !al.draining {
		b.unmapPorts(ctx, al)
		al.draining = true
		if b.spoof != nil {
			if err := b.spoof.forgetAddresses(ctx, al); err != nil {
				b.log.Warn("forget pod addresses; rebuilding the table", "pod", pod.ID, "err", err)
				if err := b.spoof.rebuild(ctx, b.ipam.allocations()); err != nil {
					al.draining = false // the next stop tries again
					return nil, fmt.Errorf("tear down network of pod %s: %w", pod.ID, err)
				}
			}
		}
	}
	return func(ctx context.Context) error { return b.finishDetach(ctx, al) }, nil
}

// finishDetach deletes a draining pod's veth, then frees its address. The
// deletion runs without b.mu: it takes tens of ms of the kernel's time,
// and other pods' setups need not wait for it.
func (b *Bridge) finishDetach(ctx context.Context, al *allocation) error {
	if err := deleteLink(al.Veth); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", al.Pod, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ipam.byPod[al.Pod] != al {
		return nil // released meanwhile (TeardownPod)
	}
	return b.teardown(ctx, al.Pod)
}

func (b *Bridge) teardown(ctx context.Context, podID string) error {
	al, ok := b.ipam.byPod[podID]
	veth := vethName(podID)
	if ok {
		veth = al.Veth
		b.unmapPorts(ctx, al)
		if b.spoof != nil {
			if err := b.spoof.remove(ctx, al); err != nil {
				// A stale element only allows an address on a veth name
				// derived from this pod's ID; the next rebuild drops it.
				b.log.Warn("forget pod addresses", "pod", podID, "err", err)
			}
		}
	}
	if err := deleteLink(veth); err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	return b.ipam.release(podID)
}

// unmapPorts removes the pod's host ports from the nftables table. When
// the host side could not be set up (b.nat nil: the network is not ready,
// e.g. the bridge's address does not match a changed pod_cidr) the table
// an earlier run made still maps them: they are removed from it all the
// same, or the next pod given this IP would receive their traffic.
func (b *Bridge) unmapPorts(ctx context.Context, al *allocation) {
	if len(al.Ports) == 0 {
		return
	}
	nats, degraded := []*natTable{b.nat, b.nat6}, b.nat == nil
	if degraded {
		nats = nil
		for _, n := range []*net.IPNet{b.subnet, b.subnet6} {
			if n == nil {
				continue
			}
			if nat, err := newNATTable(b.cfg.Name, n); err == nil {
				nats = append(nats, nat)
			}
		}
	}
	for _, nat := range nats {
		if nat == nil {
			continue
		}
		err := nat.removePorts(ctx, al)
		switch {
		case err == nil:
		case b.teardownOnly || degraded:
			// Nothing to rebuild from: the table may be gone, or never
			// had them.
			b.log.Warn("unmap host ports", "pod", al.Pod, "table", nat.name, "err", err)
		default:
			b.log.Warn("unmap host ports; rebuilding the table", "pod", al.Pod, "err", err)
			nat.rebuild(ctx, b.allocationsExcept(al.Pod))
		}
	}
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
	if b.teardownOnly {
		return b.releaseGone(ctx, isLive)
	}
	var errs []error
	for _, al := range b.ipam.allocations() {
		if !isLive[al.Pod] {
			b.log.Info("releasing network of a pod that is gone", "pod", al.Pod, "ip", al.IP)
			if b.nat == nil {
				b.unmapPorts(ctx, al) // not ready: no rebuild below
			}
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
	// A live pod whose record was unreadable keeps its veth; its address is
	// unknown to the IPAM and could be handed out again.
	for _, id := range b.ipam.lostRecords {
		if isLive[id] {
			liveVeths[vethName(id)] = true
			b.log.Error("the address record of a running pod was unreadable: its IP may be given to another pod; recreate this pod", "pod", id)
		}
	}
	b.ipam.lostRecords = nil
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
	for _, nat := range []*natTable{b.nat, b.nat6} {
		if nat != nil {
			if err := nat.rebuild(ctx, b.ipam.allocations()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if b.nat != nil && b.spoof != nil {
		if err := b.spoof.rebuild(ctx, b.ipam.allocations()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
