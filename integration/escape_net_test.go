package integration

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"runtime"
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

// sendFromPod sends each packet out of the pod's eth0 to the MAC dstMAC
// through a packet socket, from a thread in the pod's network namespace.
func sendFromPod(t *testing.T, nsPath string, dstMAC net.HardwareAddr, pkts ...[]byte) {
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
		proto := uint16(unix.ETH_P_IP<<8&0xff00 | unix.ETH_P_IP>>8) // network order
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

	sendFromPod(t, nsPath, br.HardwareAddr,
		rawUDP(podIP, gw, gwPort, []byte("control")),
		rawUDP(podIP, net.IPv4(127, 0, 0, 1), loopPort, []byte("to-loopback")),
		rawUDP(net.IPv4(127, 0, 0, 1), gw, gwPort, []byte("from-loopback")),
	)
	gotGW := received(onGW, 2*time.Second*timeoutScale)
	gotLoop := received(loop, 500*time.Millisecond)
	if _, ok := gotGW["control"]; !ok {
		t.Fatalf("the control datagram from the pod to %s:%d did not arrive (got %v): the test's injection does not work", gw, gwPort, gotGW)
	}
	if from, ok := gotLoop["to-loopback"]; ok {
		t.Errorf("a pod reached a host service on 127.0.0.1:%d (from %s) through the bridge", loopPort, from)
	}
	if from, ok := gotGW["from-loopback"]; ok {
		t.Errorf("a pod's datagram with source 127.0.0.1 was delivered to a host service as from %s", from)
	}
}
