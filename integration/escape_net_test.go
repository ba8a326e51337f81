package integration

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podNetns is the pod's network namespace path and IPv4 address.
func podNetns(t *testing.T, d *daemon, pod string) (string, net.IP) {
	t.Helper()
	st, err := d.RT.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Netns string `json:"netns"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Netns == "" {
		t.Fatalf("pod netns from the verbose status: %v %q", err, st.Info["info"])
	}
	ip := net.ParseIP(st.GetStatus().GetNetwork().GetIp()).To4()
	if ip == nil {
		t.Fatalf("pod has no IPv4 address: %v", st.GetStatus().GetNetwork())
	}
	return info.Netns, ip
}

// rawUDP is an IPv4 UDP datagram from src to dst, built by hand as a
// container with CAP_NET_RAW (a default capability) can.
func rawUDP(src, dst net.IP, dport int, payload []byte) []byte {
	pkt := make([]byte, 20+8+len(payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64 // TTL
	pkt[9] = unix.IPPROTO_UDP
	copy(pkt[12:16], src.To4())
	copy(pkt[16:20], dst.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(pkt[20:], 40000)
	binary.BigEndian.PutUint16(pkt[22:], uint16(dport))
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload))) // checksum 0: none (IPv4)
	copy(pkt[28:], payload)
	return pkt
}

// sendFromPod sends each IPv4 packet out of the pod's eth0 to the MAC
// dstMAC through a packet socket, from a thread in the pod's network
// namespace.
func sendFromPod(t *testing.T, nsPath string, dstMAC net.HardwareAddr, pkts ...[]byte) {
	t.Helper()
	sendFrames(t, nsPath, unix.ETH_P_IP, dstMAC, pkts...)
}

// sendFrames sends each payload of ethertype out of the pod's eth0.
func sendFrames(t *testing.T, nsPath string, ethertype uint16, dstMAC net.HardwareAddr, pkts ...[]byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			errc <- err
			return
		}
		proto := ethertype<<8&0xff00 | ethertype>>8 // network order
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: eth0.Index, Halen: 6}
		copy(to.Addr[:], dstMAC)
		for _, p := range pkts {
			if err := unix.Sendto(fd, p, 0, to); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("send from the pod's network namespace: %v", err)
	}
}

// received collects the payloads and sources of what conn gets until quiet.
func received(conn *net.UDPConn, quiet time.Duration) map[string]string {
	got := map[string]string{}
	buf := make([]byte, 1500)
	for {
		conn.SetReadDeadline(time.Now().Add(quiet))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		got[string(buf[:n])] = from.IP.String()
	}
}

// controlArrives sends a datagram from the pod (src) to conn until conn
// gets it: the first frames out of a new veth can be dropped while its
// queue is not yet active, which would make a test pass for nothing.
func controlArrives(t *testing.T, nsPath string, dstMAC net.HardwareAddr, src net.IP, conn *net.UDPConn) {
	t.Helper()
	to := conn.LocalAddr().(*net.UDPAddr)
	deadline := time.Now().Add(10 * time.Second * timeoutScale)
	for time.Now().Before(deadline) {
		sendFromPod(t, nsPath, dstMAC, rawUDP(src, to.IP, to.Port, []byte("control")))
		if got := received(conn, 300*time.Millisecond); got["control"] == src.String() {
			return
		} else if len(got) > 0 {
			t.Fatalf("the control datagram from %s arrived as %v", src, got)
		}
	}
	t.Fatalf("the control datagram from the pod (%s) to %s never arrived: the test's injection does not work", src, to)
}

// TestEscapeNetLocalnet: the bridge has route_localnet=1 (so that
// 127.0.0.1:hostPort from the host can be DNATed to a pod), and with it the
// kernel no longer drops packets that arrive on the bridge for 127.0.0.0/8
// or from it (CVE-2020-8558, kube-proxy's route_localnet): a pod with
// NET_RAW sending to the gateway's MAC with destination 127.0.0.1 reached
// every loopback-only service of the node (the streaming server, pprof,
// the kubelet's healthz, a kind node's etcd), and one with source
// 127.0.0.1 looked local to the host's services.
func TestEscapeNetLocalnet(t *testing.T) {
	d, image := readyDaemon(t)
	pod, _, _ := streamPod(t, d, image, containerConfig("localnet", image, "sleep", "300"))
	nsPath, podIP := podNetns(t, d, pod)
	br, err := net.InterfaceByName(d.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := br.Addrs()
	var gw net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			gw = n.IP.To4()
		}
	}
	if gw == nil {
		t.Fatalf("bridge %s has no IPv4 address", d.Bridge)
	}
	// What a loopback-only host service sees, and one on the gateway
	// address (the control: the path itself works).
	loop, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	onGW, err := net.ListenUDP("udp4", &net.UDPAddr{IP: gw})
	if err != nil {
		t.Fatal(err)
	}
	defer onGW.Close()
	loopPort, gwPort := loop.LocalAddr().(*net.UDPAddr).Port, onGW.LocalAddr().(*net.UDPAddr).Port

	controlArrives(t, nsPath, br.HardwareAddr, podIP, onGW)
	sendFromPod(t, nsPath, br.HardwareAddr,
		rawUDP(podIP, net.IPv4(127, 0, 0, 1), loopPort, []byte("to-loopback")),
		rawUDP(net.IPv4(127, 0, 0, 1), gw, gwPort, []byte("from-loopback")),
	)
	gotGW := received(onGW, 2*time.Second*timeoutScale)
	gotLoop := received(loop, 500*time.Millisecond)
	if from, ok := gotLoop["to-loopback"]; ok {
		t.Errorf("a pod reached a host service on 127.0.0.1:%d (from %s) through the bridge", loopPort, from)
	}
	if from, ok := gotGW["from-loopback"]; ok {
		t.Errorf("a pod's datagram with source 127.0.0.1 was delivered to a host service as from %s", from)
	}
}

// podMAC is the MAC of eth0 in the network namespace at nsPath.
func podMAC(t *testing.T, nsPath string) net.HardwareAddr {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+nsPath, "cat", "/sys/class/net/eth0/address").Output()
	if err != nil {
		t.Fatalf("MAC of the pod's eth0: %v", err)
	}
	mac, err := net.ParseMAC(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// arpReply is an ARP reply telling tpa at tha that spa is at sha.
func arpReply(sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 2) // reply
	copy(p[8:14], sha)
	copy(p[14:18], spa.To4())
	copy(p[18:24], tha)
	copy(p[24:28], tpa.To4())
	return p
}

// hostNeighbour is the MAC the host has for ip on dev, or "".
func hostNeighbour(dev string, ip net.IP) string {
	out, _ := exec.Command("ip", "neigh", "show", ip.String(), "dev", dev).Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// TestEscapeNetSpoof: nothing checked what a pod sends on the bridge, as
// with the CNI bridge plugin: a pod with NET_RAW could send as another pod
// (its IP as source) and answer ARP for another pod's address, taking that
// pod's traffic from the host (and, alike, the gateway's from other pods).
// Now each veth may send only from its own pod's addresses.
func TestEscapeNetSpoof(t *testing.T) {
	d, image := readyDaemon(t)
	podA, _, _ := streamPod(t, d, image, containerConfig("spoof-a", image, "sleep", "300"))
	podB, _, _ := streamPod(t, d, image, containerConfig("spoof-b", image, "sleep", "300"))
	nsA, ipA := podNetns(t, d, podA)
	_, ipB := podNetns(t, d, podB)
	br, err := net.InterfaceByName(d.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := br.Addrs()
	var gw net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			gw = n.IP.To4()
		}
	}
	onGW, err := net.ListenUDP("udp4", &net.UDPAddr{IP: gw})
	if err != nil {
		t.Fatal(err)
	}
	defer onGW.Close()
	gwPort := onGW.LocalAddr().(*net.UDPAddr).Port

	controlArrives(t, nsA, br.HardwareAddr, ipA, onGW)
	sendFromPod(t, nsA, br.HardwareAddr, rawUDP(ipB, gw, gwPort, []byte("as-b")))
	got := received(onGW, 2*time.Second*timeoutScale)
	if from, ok := got["as-b"]; ok {
		t.Errorf("pod A sent as pod B: a datagram from %s arrived", from)
	}

	// The host learns B's MAC, then A claims B's address.
	macA := podMAC(t, nsA)
	if out, err := exec.Command("ping", "-c", "1", "-W", "5", ipB.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping pod B from the host: %v: %s", err, out)
	}
	before := hostNeighbour(d.Bridge, ipB)
	if before == "" || before == macA.String() {
		t.Fatalf("host's neighbour entry of pod B: %q (A is %s)", before, macA)
	}
	time.Sleep(1200 * time.Millisecond) // past the kernel's locktime (1 s)
	sendFrames(t, nsA, unix.ETH_P_ARP, br.HardwareAddr, arpReply(macA, ipB, br.HardwareAddr, gw))
	time.Sleep(500 * time.Millisecond)
	if after := hostNeighbour(d.Bridge, ipB); after == macA.String() {
		t.Errorf("pod A poisoned the host's ARP entry of pod B (%s): now %s, was %s", ipB, after, before)
	}

	// Removed pods leave no address allowed.
	for _, pod := range []string{podA, podB} {
		if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("nft", "list", "set", "bridge", "peapod-"+d.Bridge, "pods4").CombinedOutput()
	if err != nil || strings.Contains(string(out), "elements") {
		t.Errorf("addresses still allowed after the pods were removed (err %v): %s", err, out)
	}
}

// TestNetAntispoofScoped: a bridge-family hook sees the frames of every
// bridge on the host, so the anti-spoofing table must leave alone what is
// not one of its daemon's pods: here a veth named like a pod's ("pp…") on
// a bridge of another owner, whose frames a rule on the name prefix
// dropped (another daemon's pods, or every pod once a table was left
// behind).
func TestNetAntispoofScoped(t *testing.T) {
	d, image := readyDaemon(t)
	streamPod(t, d, image, containerConfig("scoped", image, "sleep", "300"))
	if exec.Command("nft", "list", "table", "bridge", "peapod-"+d.Bridge).Run() != nil {
		t.Fatalf("no table bridge peapod-%s", d.Bridge)
	}
	suffix := randomSuffix()[:6]
	br, veth, ns := "ppx"+suffix, "pp"+suffix+"f", "peapod-scoped-"+suffix
	guardBridge(t, br)
	prefix := strings.TrimSuffix(freePodCIDR(t), "0/24")
	gw, peer := net.ParseIP(prefix+"1").To4(), net.ParseIP(prefix+"2").To4()
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", veth).Run()
		exec.Command("ip", "link", "del", br).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", gw.String() + "/24", "dev", br},
		{"link", "set", br, "up"},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", br, "up"},
		{"-n", ns, "addr", "add", peer.String() + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ifc, err := net.InterfaceByName(br)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: gw})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	controlArrives(t, "/run/netns/"+ns, ifc.HardwareAddr, peer, conn)
}
