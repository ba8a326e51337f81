package network

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/peapod-cri/peapod/durable"
)

// allocation is what the built-in network holds for one pod. One JSON file
// per pod under the IPAM dir, so a restarted daemon (or one after a crash)
// knows which IPs, veths and host ports are taken.
type allocation struct {
	Pod   string        `json:"pod"`
	IP    string        `json:"ip"`
	IP6   string        `json:"ip6,omitempty"` // dual-stack: the v6 address with the same host part
	Veth  string        `json:"veth"`
	Ports []PortMapping `json:"ports,omitempty"`
	// draining: the pod stopped (Bridge.DetachPod). Its host ports and its
	// addresses' anti-spoof elements are gone; its veth is being deleted
	// and the address stays taken until it is. Not recorded: a restart
	// releases every stopped pod's allocation (Reconcile).
	draining bool
}

// ipam hands out the addresses of one IPv4 subnet. The caller serialises
// calls (Bridge.mu); the files are the truth, the maps their index.
type ipam struct {
	dir     string
	subnet  *net.IPNet
	first   uint32 // first assignable (after network and gateway)
	last    uint32 // last assignable (before broadcast)
	next    uint32 // where the next search starts: recently freed IPs are not reused at once
	byPod   map[string]*allocation
	byIP    map[uint32]string
	gateway net.IP
	subnet6 *net.IPNet // nil: IPv4 only
	// lostRecords are pods whose record was unreadable at open (moved to
	// quarantineDir): their address is unknown.
	lostRecords []string
}

// quarantineDir (below the IPAM dir) keeps records that could not be read,
// for a person to look at; nothing reads them again.
const quarantineDir = "unreadable"

// readAllocation reads and checks the record of pod at path.
func readAllocation(path, pod string) (*allocation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var al allocation
	if err := json.Unmarshal(data, &al); err != nil {
		return nil, fmt.Errorf("decode (%d bytes): %w", len(data), err)
	}
	if al.Pod != pod {
		return nil, fmt.Errorf("record names pod %q, not %q", al.Pod, pod)
	}
	if net.ParseIP(al.IP).To4() == nil {
		return nil, fmt.Errorf("record has no IPv4 address (%q)", al.IP)
	}
	return &al, nil
}

// quarantineRecord moves the record name out of the way and returns where
// it went ("" if it could not be moved; then it is removed, so that the next
// start does not meet it again).
func quarantineRecord(dir, name string) string {
	q := filepath.Join(dir, quarantineDir)
	dst := filepath.Join(q, name+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.MkdirAll(q, 0o700); err == nil {
		if err := os.Rename(filepath.Join(dir, name), dst); err == nil {
			return dst
		}
	}
	os.Remove(filepath.Join(dir, name))
	return ""
}

func ip4ToU32(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func u32ToIP4(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// gatewayOf is the first address of the subnet: the bridge's own.
func gatewayOf(subnet *net.IPNet) net.IP { return u32ToIP4(ip4ToU32(subnet.IP) + 1) }

// ip6At is the address of subnet6 whose host part is off (off fits in the
// host part: ParsePodCIDRs checks that the v6 range is at least as large).
func ip6At(subnet6 *net.IPNet, off uint32) net.IP {
	ip := make(net.IP, 16)
	copy(ip, subnet6.IP.To16())
	binary.BigEndian.PutUint32(ip[12:], binary.BigEndian.Uint32(ip[12:])|off)
	return ip
}

// openIPAM loads the records in dir. logf (may be nil) reports records it
// had to move aside.
func openIPAM(dir string, subnet, subnet6 *net.IPNet, logf func(msg string, args ...any)) (*ipam, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM dir: %w", err)
	}
	ones, bits := subnet.Mask.Size()
	base := ip4ToU32(subnet.IP)
	size := uint32(1) << uint(bits-ones)
	a := &ipam{
		dir:     dir,
		subnet:  subnet,
		first:   base + 2,
		last:    base + size - 2,
		byPod:   map[string]*allocation{},
		byIP:    map[uint32]string{},
		gateway: gatewayOf(subnet),
		subnet6: subnet6,
	}
	a.next = a.first
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read IPAM dir: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), durable.TempPrefix) {
			os.Remove(path) // a write the daemon did not finish
			continue
		}
		if !e.Type().IsRegular() {
			continue // the quarantine dir, or nothing of ours
		}
		al, err := readAllocation(path, e.Name())
		if err != nil {
			// A record a power cut emptied or tore: never fatal. The pod it
			// named is gone after a power cut; Reconcile decides for a live
			// one (lostRecords).
			moved := quarantineRecord(dir, e.Name())
			a.lostRecords = append(a.lostRecords, e.Name())
			if logf != nil {
				logf("IPAM record unreadable, moved aside", "record", path, "moved_to", moved, "err", err)
			}
			continue
		}
		if ip := net.ParseIP(al.IP).To4(); ip == nil || !subnet.Contains(ip) {
			// The pod CIDR changed since this pod was set up; its IP is
			// not ours to hand out, but the record still says what to
			// tear down.
			a.byPod[al.Pod] = al
			continue
		}
		a.byPod[al.Pod] = al
		a.byIP[ip4ToU32(net.ParseIP(al.IP))] = al.Pod
	}
	return a, nil
}

// allocate gives pod an address and records it with veth and ports. A pod
// that already has one keeps it (a retried setup).
func (a *ipam) allocate(pod, veth string, ports []PortMapping) (*allocation, error) {
	if al, ok := a.byPod[pod]; ok {
		return al, nil
	}
	al, err := a.reserve(pod, veth, ports)
	if err != nil {
		return nil, err
	}
	if err := a.write(al); err != nil {
		a.release(pod)
		return nil, err
	}
	return al, nil
}

// reserve takes the next free address for the pod in memory only; the
// caller records it with write, or gives it back with release.
func (a *ipam) reserve(pod, veth string, ports []PortMapping) (*allocation, error) {
	if al, ok := a.byPod[pod]; ok {
		return al, nil
	}
	for n, v := uint32(0), a.next; n <= a.last-a.first; n, v = n+1, v+1 {
		if v > a.last {
			v = a.first
		}
		if _, taken := a.byIP[v]; taken {
			continue
		}
		al := &allocation{Pod: pod, IP: u32ToIP4(v).String(), Veth: veth, Ports: ports}
		if a.subnet6 != nil {
			al.IP6 = ip6At(a.subnet6, v-ip4ToU32(a.subnet.IP)).String()
		}
		a.byPod[pod] = al
		a.byIP[v] = pod
		a.next = v + 1
		return al, nil
	}
	return nil, fmt.Errorf("no free address in pod CIDR %s (%d pods): widen pod_cidr", a.subnet, len(a.byIP))
}

// write persists al atomically and durably (temp file, fsync, rename,
// fsync of the directory): pods may outlive a daemon crash, and after a
// power cut an address record must be whole or absent, never empty.
func (a *ipam) write(al *allocation) error {
	data, err := json.Marshal(al)
	if err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(a.dir, al.Pod), data, 0o600); err != nil {
		return fmt.Errorf("record IP of pod %s: %w", al.Pod, err)
	}
	return nil
}

// release frees the pod's address. Releasing an unknown pod is not an error.
func (a *ipam) release(pod string) error {
	al, ok := a.byPod[pod]
	if !ok {
		return nil
	}
	if err := os.Remove(filepath.Join(a.dir, pod)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release IP of pod %s: %w", pod, err)
	}
	delete(a.byPod, pod)
	if ip := net.ParseIP(al.IP).To4(); ip != nil && a.byIP[ip4ToU32(ip)] == pod {
		delete(a.byIP, ip4ToU32(ip))
	}
	return nil
}

func (a *ipam) allocations() []*allocation {
	out := make([]*allocation, 0, len(a.byPod))
	for _, al := range a.byPod {
		out = append(out, al)
	}
	return out
}
