package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestNetworkBackendRecordedPerPod is the podman trap of the isolation
// issue: a pod runs on the built-in network, then a CNI conflist appears in
// peapod's CNI dir (as Debian's podman drops 87-podman-bridge.conflist into
// /etc/cni/net.d) and peapod restarts with network = auto, or with network
// = cni. The old pod must still be torn down through the built-in network
// (its veth, IPAM record and nft host-port element gone after
// RemovePodSandbox), new pods must get CNI, and the start must warn that
// running pods are on the other backend.
func TestNetworkBackendRecordedPerPod(t *testing.T) {
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	for _, mode := range []string{"auto", "cni"} {
		t.Run(mode, func(t *testing.T) { checkBackendSwitch(t, mode) })
	}
}

func checkBackendSwitch(t *testing.T, mode string) {
	d := newDaemon(t, "127.0.0.1:1") // no image: the pause is built in
	d.Start()                        // the default: built-in network
	c := ctx(t)
	const hostPort = 31877
	cfgA := podConfig("backend-a", filepath.Join(d.Dir, "logs-a"))
	cfgA.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: hostPort}}
	podA := runPod(t, d, cfgA).PodSandboxId
	if got := podBackend(t, d, podA); got != "builtin" {
		t.Fatalf("pod on the built-in network records backend %q", got)
	}
	veth := podVeth(podA)
	ipamRecord := filepath.Join(d.Root, "network", "ipam-"+d.Bridge, podA)
	if _, err := os.Stat(ipamRecord); err != nil {
		t.Fatalf("built-in pod has no IPAM record: %v", err)
	}
	if !linkExists(veth) {
		t.Fatalf("built-in pod has no veth %s", veth)
	}
	if !strings.Contains(nftMap(t, d.Bridge), fmt.Sprint(hostPort)) {
		t.Fatalf("host port %d not in the nft map of %s: %s", hostPort, d.Bridge, nftMap(t, d.Bridge))
	}
	d.Stop()

	// A CNI network of the test's own: its bridge and /24 (not the built-in one's).
	cniBridge := d.Bridge + "c"
	guardBridge(t, cniBridge)
	t.Cleanup(func() { exec.Command("ip", "link", "del", cniBridge).Run() })
	cniCIDR := freePodCIDR(t)
	for cniCIDR == d.PodCIDR {
		cniCIDR = freePodCIDR(t)
	}
	_, cniNet, _ := net.ParseCIDR(cniCIDR)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppt-backend-%[1]s", "plugins": [
  {"type": "bridge", "bridge": %[1]q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %[2]q, "ranges": [[{"subnet": %[3]q}]]}}]}`,
		cniBridge, filepath.Join(d.Dir, "cni-ipam"), cniCIDR)
	if err := os.WriteFile(filepath.Join(d.CNIConfDir, "87-podman-bridge.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--network", mode)
	d.Start()
	c = ctx(t)

	waitFor(t, 10*time.Second, "the backend-change warning in the log", func() bool {
		log, _ := os.ReadFile(d.LogPath)
		return strings.Contains(string(log), "POD NETWORK BACKEND CHANGED") && strings.Contains(string(log), podA)
	})
	podB := runPod(t, d, podConfig("backend-b", filepath.Join(d.Dir, "logs-b"))).PodSandboxId
	st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podB})
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(st.Status.GetNetwork().GetIp()); ip == nil || !cniNet.Contains(ip) {
		t.Fatalf("new pod got IP %q, want one of the CNI network %s", st.Status.GetNetwork().GetIp(), cniCIDR)
	}
	if got, old := podBackend(t, d, podB), podBackend(t, d, podA); got != "cni" || old != "builtin" {
		t.Fatalf("recorded backends: new pod %q, old pod %q; want cni and builtin", got, old)
	}

	// The old pod goes through the built-in network, which set it up.
	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podA}); err != nil {
		t.Fatalf("stop the built-in pod: %v", err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podA}); err != nil {
		t.Fatalf("remove the built-in pod: %v", err)
	}
	if _, err := os.Stat(ipamRecord); !os.IsNotExist(err) {
		t.Errorf("IPAM record of the built-in pod left after RemovePodSandbox (err %v)", err)
	}
	if linkExists(veth) {
		t.Errorf("veth %s of the built-in pod left after RemovePodSandbox", veth)
	}
	if m := nftMap(t, d.Bridge); strings.Contains(m, fmt.Sprint(hostPort)) {
		t.Errorf("host port %d of the built-in pod left in nft table peapod-%s: %s", hostPort, d.Bridge, m)
	}

	// The CNI pod goes through CNI.
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podB}); err != nil {
		t.Fatalf("remove the CNI pod: %v", err)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", cniBridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("veth left on the CNI bridge %s: %s", cniBridge, out)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.Dir, "cni-ipam", "ppt-backend-"+cniBridge)); len(ents) > 2 { // last_reserved_ip.0 and lock stay
		t.Errorf("host-local still holds addresses: %v", ents)
	}
}

// TestNetworkCNIWaitsForConfig: with network = cni and no CNI config yet
// (a node whose network add-on has not written one), peapod starts,
// reports NetworkReady false naming the dir, refuses pods, and takes the
// config when it appears, without a restart.
func TestNetworkCNIWaitsForConfig(t *testing.T) {
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	d := newDaemon(t, "127.0.0.1:1")
	d.Args = append(d.Args, "--network", "cni")
	d.Start()
	c := ctx(t)
	cond := networkCondition(t, d)
	if cond.Status || !strings.Contains(cond.Message, d.CNIConfDir) {
		t.Fatalf("NetworkReady = %v (%q), want false naming %s", cond.Status, cond.Message, d.CNIConfDir)
	}
	if _, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("wait-a", filepath.Join(d.Dir, "logs"))}); err == nil {
		t.Fatal("RunPodSandbox succeeded with no CNI config")
	}
	cniBridge := d.Bridge + "c"
	guardBridge(t, cniBridge)
	t.Cleanup(func() { exec.Command("ip", "link", "del", cniBridge).Run() })
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppt-wait-%[1]s", "plugins": [
  {"type": "bridge", "bridge": %[1]q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %[2]q, "ranges": [[{"subnet": %[3]q}]]}}]}`,
		cniBridge, filepath.Join(d.Dir, "cni-ipam"), d.PodCIDR)
	if err := os.WriteFile(filepath.Join(d.CNIConfDir, "10-net.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if cond := networkCondition(t, d); !cond.Status {
		t.Fatalf("NetworkReady false after the CNI config appeared: %s", cond.Message)
	}
	pod := runPod(t, d, podConfig("wait-b", filepath.Join(d.Dir, "logs"))).PodSandboxId
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Root, "network", "ipam-"+d.Bridge)); !os.IsNotExist(err) {
		t.Errorf("network = cni set up the built-in network's state (err %v)", err)
	}
	if linkExists(d.Bridge) {
		t.Errorf("network = cni created the built-in bridge %s", d.Bridge)
	}
}

func networkCondition(t *testing.T, d *daemon) *runtimeapi.RuntimeCondition {
	t.Helper()
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.GetConditions() {
		if c.Type == runtimeapi.NetworkReady {
			return c
		}
	}
	t.Fatal("no NetworkReady condition")
	return nil
}

// podBackend is the network backend the pod's verbose status reports.
func podBackend(t *testing.T, d *daemon, pod string) string {
	t.Helper()
	resp, err := d.RT.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		NetworkBackend string `json:"networkBackend"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("verbose info of pod %s: %v", pod, err)
	}
	return info.NetworkBackend
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", name).Run() == nil
}

// nftMap lists the host-port maps of the built-in network's table ("" when
// the table is gone).
func nftMap(t *testing.T, bridge string) string {
	out, _ := exec.Command("nft", "list", "map", "ip", "peapod-"+bridge, "hostports").CombinedOutput()
	return string(out)
}
