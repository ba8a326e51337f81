package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNetwork runs two pods on the built-in network: each gets an IP of
// the daemon's pod CIDR, pod B fetches from pod A's busybox httpd by IP (with nc: Debian's
// dynamic busybox wget crashes without NSS modules in the image),
// and pod A's hostPort answers on 127.0.0.1. Removing the pods leaves no
// veth and no host port.
func TestPodNetwork(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	hostPort := checkPodNetwork(t, d, image, nil)
	if out, _ := exec.Command("nft", "list", "table", "ip", "peapod-"+d.Bridge).CombinedOutput(); strings.Contains(string(out), itoa(hostPort)) {
		t.Errorf("host port left after removing the pods:\n%s", out)
	}
}

// checkPodNetwork runs pods A (httpd, a hostPort, annotationsA) and B on d,
// checks that B reaches A by IP, the host reaches A by IP and through the
// host port on 127.0.0.1, runs afterUp (if any) while both pods are up,
// removes them and checks that neither veth nor host port is left. It
// returns the host port.
func checkPodNetwork(t *testing.T, d *daemon, image string, annotationsA map[string]string, afterUp ...func(podA string)) int {
	t.Helper()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR(d.PodCIDR)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	logA := t.TempDir()
	logDirs := map[string]string{"net-a": logA, "net-b": t.TempDir()}
	run := func(name string, ports []*runtimeapi.PortMapping, cmd ...string) (pod, ctr, ip string) {
		t.Helper()
		cfg := podConfig(name, logDirs[name])
		cfg.PortMappings = ports
		if name == "net-a" {
			for k, v := range annotationsA {
				cfg.Annotations[k] = v
			}
		}
		start := time.Now()
		resp, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("run pod %s: %v", name, err)
		}
		t.Logf("RunPodSandbox %s: %s", name, time.Since(start))
		st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
		if err != nil {
			t.Fatal(err)
		}
		ip = st.GetStatus().GetNetwork().GetIp()
		if parsed := net.ParseIP(ip); parsed == nil || !subnet.Contains(parsed) {
			t.Fatalf("pod %s IP %q is not in %s", name, ip, d.PodCIDR)
		}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId,
			Config: containerConfig(name, image, cmd...), SandboxConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		return resp.PodSandboxId, cr.ContainerId, ip
	}
	podA, _, ipA := run("net-a", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(hostPort)}},
		"sh", "-c", "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 80 -h /www")
	podB, ctrB, ipB := run("net-b", nil, "sleep", "3600")
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}

	// Pod B reaches pod A by IP.
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctrB,
			Cmd: []string{"sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 ` + ipA + " 80"}, Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		out = string(resp.Stdout) + string(resp.Stderr)
		if resp.ExitCode == 0 && strings.Contains(out, "hello-from-a") {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(logA, "net-a.log"))
			t.Fatalf("pod B could not fetch from pod A at %s: exit %d: %s\npod A's log: %s", ipA, resp.ExitCode, out, logs)
		}
	}

	// The host reaches pod A by IP, and through its host port on 127.0.0.1.
	expectServed(t, "hello-from-a", "http://"+ipA+":80/", "http://127.0.0.1:"+itoa(hostPort)+"/")

	for _, f := range afterUp {
		f(podA)
	}

	for _, p := range []string{podA, podB} {
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.Bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("veths left after removing the pods: %s", out)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	if _, err := client.Get("http://127.0.0.1:" + itoa(hostPort) + "/"); err == nil {
		t.Error("host port still answers after the pod is gone")
	}
	return hostPort
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestPodNetworkCNI runs the same checks as TestPodNetwork with Debian's CNI
// bridge + host-local + portmap + bandwidth plugins configured in the
// daemon's CNI dir. The conflist has no range of its own: host-local gets
// the daemon's pod_cidr only from the ipRanges capability peapod passes. Pod A's bandwidth annotations must reach the bandwidth
// plugin (a tbf qdisc on its veth, an ifb device for egress). Debian's
// portmap is iptables-based and leaves its top-level chains behind; the
// test removes those it created.
func TestPodNetworkCNI(t *testing.T) {
	if _, err := os.Stat("/usr/lib/cni/portmap"); err != nil {
		t.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	regAddr, image := testImage(t)
	keepIPTables(t) // before newDaemon: its cleanup runs after the daemon's
	ifbsBefore := ifbLinks()
	d := newDaemon(t, regAddr)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppt-cni-%[1]s", "plugins": [
  {"type": "bridge", "bridge": %[1]q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "capabilities": {"ipRanges": true},
   "ipam": {"type": "host-local", "dataDir": %[2]q, "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}`,
		d.Bridge, filepath.Join(d.Dir, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(d.CNIConfDir, "10-ppt.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--network", "cni")
	d.Start()
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.NetworkReady && !cond.Status {
			t.Fatalf("NetworkReady false with CNI bridge configured: %s", cond.Message)
		}
	}
	annotations := map[string]string{"kubernetes.io/ingress-bandwidth": "100M", "kubernetes.io/egress-bandwidth": "100M"}
	hostPort := checkPodNetwork(t, d, image, annotations, func(podA string) {
		out, _ := exec.Command("sh", "-c", "for v in $(ip -o link show master "+d.Bridge+" | awk -F': ' '{print $2}' | cut -d@ -f1); do tc qdisc show dev $v; done").CombinedOutput()
		if !strings.Contains(string(out), "tbf") {
			t.Errorf("no tbf qdisc on the pods' veths: the ingress-bandwidth annotation did not reach the bandwidth plugin:\n%s", out)
		}
		if len(ifbLinks()) <= len(ifbsBefore) {
			t.Errorf("no ifb device: the egress-bandwidth annotation did not reach the bandwidth plugin")
		}
	})
	if left := newItems(ifbsBefore, ifbLinks()); len(left) > 0 {
		t.Errorf("ifb devices left after removing the pods: %v", left)
	}
	if out, _ := exec.Command("iptables-save", "-t", "nat").CombinedOutput(); strings.Contains(string(out), "dport "+itoa(hostPort)) {
		t.Errorf("host port %d left in iptables after removing the pods:\n%s", hostPort, out)
	}
}

// ifbLinks lists the bandwidth plugin's ifb devices (for egress shaping;
// named bwp<hash>). Loading the ifb module also makes ifb0 and ifb1: not
// the plugin's, and they stay while the module is loaded.
func ifbLinks() []string {
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "ifb").CombinedOutput()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.SplitN(line, ": ", 3); len(f) == 3 && strings.HasPrefix(f[1], "bwp") {
			names = append(names, strings.Split(f[1], "@")[0])
		}
	}
	return names
}

func newItems(before, after []string) []string {
	seen := map[string]bool{}
	for _, b := range before {
		seen[b] = true
	}
	var out []string
	for _, a := range after {
		if !seen[a] {
			out = append(out, a)
		}
	}
	return out
}

// keepIPTables removes at cleanup the iptables nat chains, and the rules
// jumping to them, that did not exist when it was called: Debian's portmap
// plugin leaves CNI-HOSTPORT-DNAT, -SETMARK and -MASQ behind after the last
// DEL. A new chain that still leads to a pod's mapping (someone else's
// CNI-DN-* chain) is left alone. A nat table that did not exist before and
// is empty again is deleted. It also fails the test if a per-pod chain
// (CNI-DN-*) of the test is left.
func keepIPTables(t *testing.T) {
	t.Helper()
	for _, fam := range []struct{ cmd, nftFamily string }{{"iptables", "ip"}, {"ip6tables", "ip6"}} {
		hadTable := exec.Command("nft", "list", "table", fam.nftFamily, "nat").Run() == nil
		var before map[string]bool
		if hadTable {
			before = natChains(fam.cmd)
		}
		t.Cleanup(func() {
			if exec.Command("nft", "list", "table", fam.nftFamily, "nat").Run() != nil {
				return
			}
			rules := natRules(fam.cmd)
			var created []string
			for chain := range natChains(fam.cmd) {
				if !before[chain] {
					created = append(created, chain)
				}
			}
			for _, chain := range created {
				if strings.HasPrefix(chain, "CNI-DN-") {
					t.Errorf("%s: per-pod portmap chain %s left after the pods were removed", fam.cmd, chain)
				}
			}
			var remove []string
			for _, chain := range created {
				inUse := false
				for _, r := range rules {
					if strings.HasPrefix(r, "-A "+chain+" ") && strings.Contains(r, "-j CNI-DN-") && !slices.Contains(created, ruleTarget(r)) {
						inUse = true
					}
				}
				if !inUse {
					remove = append(remove, chain)
				}
			}
			for _, r := range rules {
				if slices.Contains(remove, ruleTarget(r)) && !slices.Contains(remove, strings.Fields(r)[1]) {
					// -S quotes as a shell does (comments have spaces).
					del := fam.cmd + " -t nat -D " + strings.TrimPrefix(r, "-A ")
					if out, err := exec.Command("sh", "-c", del).CombinedOutput(); err != nil {
						t.Errorf("cleanup: %s: %v: %s", del, err, out)
					}
				}
			}
			for _, chain := range remove {
				exec.Command(fam.cmd, "-t", "nat", "-F", chain).Run()
			}
			for _, chain := range remove {
				if out, err := exec.Command(fam.cmd, "-t", "nat", "-X", chain).CombinedOutput(); err != nil {
					t.Errorf("cleanup: %s -X %s: %v: %s", fam.cmd, chain, err, out)
				}
			}
			if !hadTable && len(natChains(fam.cmd)) == 0 && len(natRules(fam.cmd)) == 0 {
				exec.Command("nft", "delete", "table", fam.nftFamily, "nat").Run()
			}
		})
	}
}

// natChains lists the user-defined chains of the nat table.
func natChains(cmd string) map[string]bool {
	out, _ := exec.Command(cmd, "-t", "nat", "-S").Output()
	chains := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" {
			chains[f[1]] = true
		}
	}
	return chains
}

// natRules lists the nat table's rules as -A lines.
func natRules(cmd string) []string {
	out, _ := exec.Command(cmd, "-t", "nat", "-S").Output()
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") {
			rules = append(rules, line)
		}
	}
	return rules
}

// ruleTarget is the chain an -A line jumps or goes to, or "".
func ruleTarget(rule string) string {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			return f[i+1]
		}
	}
	return ""
}

// TestNetworkNotReadyMissingPlugin: a CNI config naming a plugin that is
// not installed makes Status report NetworkReady false with the plugin's
// name, and RunPodSandbox fail naming it, leaving no pod.
func TestNetworkNotReadyMissingPlugin(t *testing.T) {
	d := newDaemon(t, "127.0.0.1:1") // no image is pulled: the pause is built in
	const plugin = "ppt-no-such-plugin"
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppt-missing", "plugins": [{"type": %q}]}`, plugin)
	if err := os.WriteFile(filepath.Join(d.CNIConfDir, "10-missing.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--network", "cni")
	d.Start()
	c := ctx(t)
	st, err := d.RT.Status(c, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var network *runtimeapi.RuntimeCondition
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.NetworkReady {
			network = cond
		}
	}
	if network == nil || network.Status || !strings.Contains(network.Message, plugin) {
		t.Fatalf("NetworkReady condition %v: want false with a message naming %s", network, plugin)
	}
	t.Logf("NetworkReady=false reason=%s message=%q", network.Reason, network.Message)
	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("net-missing", t.TempDir())})
	if err == nil || !strings.Contains(err.Error(), plugin) {
		t.Fatalf("RunPodSandbox: %v: want an error naming %s", err, plugin)
	}
	t.Logf("RunPodSandbox: %v", err)
	if list, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}); err != nil || len(list.Items) != 0 {
		t.Fatalf("pods after a failed RunPodSandbox: %v %v", list.GetItems(), err)
	}
}

// TestNetworkCycles runs 200 pods one after another through the daemon on
// the built-in network, every fourth with host ports, and removes each; then
// counts what is left and wants zero of each: veths (on the bridge, and
// anywhere with a pod's name), IPAM allocation files, host-port map
// elements (the table must be as it was before), and pause processes or
// network namespaces of the pods.
func TestNetworkCycles(t *testing.T) {
	const cycles = 200
	d := newDaemon(t, "127.0.0.1:1")
	d.Start()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	table := "peapod-" + d.Bridge
	tableBefore, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table %s: %v: %s", table, err, tableBefore)
	}
	type podRec struct {
		id, netns string
		pid       int
	}
	// count counts what pods holds: veths (on the bridge, and anywhere
	// under a pod's derived name), IPAM files, host-port map elements, and
	// live pause processes and network namespaces of the pods.
	type counts struct{ onBridge, named, ipam, elements, pauses, netnss int }
	count := func(pods []podRec) counts {
		t.Helper()
		// Veths.
		onBridge := 0
		if out := ipLinks(t, "master", d.Bridge); strings.TrimSpace(out) != "" {
			onBridge = len(strings.Split(strings.TrimSpace(out), "\n"))
		}
		allLinks := ipLinks(t, "type", "veth")
		named := 0
		for _, p := range pods {
			if strings.Contains(allLinks, " "+podVeth(p.id)+"@") {
				named++
			}
		}
		// IPAM: one file per allocation.
		ipamFiles, err := os.ReadDir(filepath.Join(d.Root, "network", "ipam-"+d.Bridge))
		if err != nil {
			t.Fatal(err)
		}
		ipam := len(ipamFiles)
		// nft: host-port map elements (the rules are compared after).
		elements := 0
		for _, m := range []string{"hostports", "hostip-ports"} {
			out, err := exec.Command("nft", "list", "map", "ip", table, m).CombinedOutput()
			if err != nil {
				t.Fatalf("nft list map %s: %v: %s", m, err, out)
			}
			if _, els, ok := strings.Cut(string(out), "elements = {"); ok {
				elements += strings.Count(els, ":")
			}
		}
		// Pause processes and network namespaces of the pods. Namespace
		// inodes are reused, so only this test's peapod binary counts.
		pauses, netnss := 0, 0
		podNetNS := map[string]bool{}
		for _, p := range pods {
			podNetNS[p.netns] = true
			if isOurPause(strconv.Itoa(p.pid)) {
				pauses++
			}
		}
		// A namespace counts once however many processes hold it (a pod
		// with a shared PID namespace has the keeper and the PID holder).
		held := map[string]bool{}
		procs, _ := os.ReadDir("/proc")
		for _, e := range procs {
			if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && podNetNS[ns] && isOurPause(e.Name()) {
				held[ns] = true
			}
		}
		netnss = len(held)
		return counts{onBridge, named, ipam, elements, pauses, netnss}
	}
	var pods []podRec
	logDir := t.TempDir()
	var runTimes []time.Duration
	start := time.Now()
	for i := range cycles {
		cfg := podConfig(fmt.Sprintf("cycle-%d", i), logDir)
		if i%4 == 0 {
			cfg.PortMappings = []*runtimeapi.PortMapping{
				{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(20000 + i)},
				{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: int32(20000 + i), HostIp: "127.0.0.1"},
			}
		}
		t0 := time.Now()
		resp, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("cycle %d: run: %v", i, err)
		}
		runTimes = append(runTimes, time.Since(t0))
		rec := podRec{id: resp.PodSandboxId, pid: pausePID(c, d, resp.PodSandboxId)}
		if rec.pid <= 0 {
			t.Fatalf("cycle %d: no pause PID in the verbose status", i)
		}
		if rec.netns, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", rec.pid)); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, rec)
		if i == 0 { // the counts see a pod that is up
			if n, want := count(pods), (counts{1, 1, 1, 2, 1, 1}); n != want {
				t.Fatalf("counts with one pod up: %+v, want %+v", n, want)
			}
		}
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatalf("cycle %d: remove: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	slices.Sort(runTimes)
	t.Logf("%d run/remove cycles in %s (RunPodSandbox p50 %s, p99 %s)", cycles, elapsed.Round(time.Millisecond),
		runTimes[len(runTimes)/2].Round(time.Microsecond), runTimes[len(runTimes)*99/100].Round(time.Microsecond))

	n := count(pods)
	tableAfter, _ := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	t.Logf("after %d cycles: veths on the bridge %d, veths with a pod's name %d, IPAM files %d, host-port map elements %d, pause processes %d, pod netns in use %d",
		cycles, n.onBridge, n.named, n.ipam, n.elements, n.pauses, n.netnss)
	if n != (counts{}) {
		t.Errorf("left after %d cycles: %+v", cycles, n)
	}
	if string(tableAfter) != string(tableBefore) {
		t.Errorf("nft table %s changed over the cycles:\nbefore:\n%s\nafter:\n%s", table, tableBefore, tableAfter)
	}
}

// isOurPause says whether /proc/<pid> is a pause process of the peapod this
// test run built (or of an embedded keeper).
func isOurPause(pid string) bool {
	cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
	if !strings.Contains(string(cmdline), "pod-pause") {
		return false
	}
	// The keeper embedded in peapod runs from a sealed memfd of that name;
	// the callers also match the pod's network namespace or PID.
	if exe, _ := os.Readlink("/proc/" + pid + "/exe"); strings.HasPrefix(exe, "/memfd:peapod-pause") {
		return true
	}
	for _, bin := range ourBinaries() {
		if runsBinary(pid, bin) {
			return true
		}
	}
	return false
}

// ourBinaries are the binaries this test's daemon runs processes of: the
// daemon's own (runners, exec helpers, keepers without peapod-pause) and
// peapod-pause beside it (the static keeper, when built).
func ourBinaries() []string {
	bins := []string{peapodBinary}
	if pause := filepath.Join(filepath.Dir(peapodBinary), "peapod-pause"); fileExists(pause) {
		bins = append(bins, pause)
	}
	return bins
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// runsBinary says whether /proc/<pid> runs the binary at path: directly,
// or through the sealed read-only overlay of its directory that pauses and
// exec helpers run from (its exe then reads "/<name>", and stat gives the
// binary's own inode).
func runsBinary(pid, path string) bool {
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil {
		return false
	}
	if exe == path {
		return true
	}
	if exe != "/"+filepath.Base(path) {
		return false
	}
	var sealed, real syscall.Stat_t
	return syscall.Stat("/proc/"+pid+"/exe", &sealed) == nil && syscall.Stat(path, &real) == nil && sealed.Ino == real.Ino
}

// podVeth is the host end of a pod's veth on the built-in network
// (network.vethName): "pp" and the first 6 bytes of sha256(pod ID) in hex.
func podVeth(podID string) string {
	h := sha256.Sum256([]byte(podID))
	return "pp" + hex.EncodeToString(h[:6])
}

// expectServed GETs each URL from the host and fails unless the body
// contains want.
func expectServed(t *testing.T, want string, urls ...string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	for _, url := range urls {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %q", url, body)
		}
	}
}

// ipLinks lists links ("ip -o link show ARGS"), one per line. A dump that
// other links' churn interrupted (iproute2 says so on stderr, and the list
// may be incomplete or repeat links) is taken again.
func ipLinks(t *testing.T, args ...string) string {
	t.Helper()
	for attempt := 0; ; attempt++ {
		var stderr strings.Builder
		cmd := exec.Command("ip", append([]string{"-o", "link", "show"}, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil && stderr.Len() == 0 {
			return string(out)
		}
		if attempt == 10 {
			t.Fatalf("ip link show %v: %v: %s", args, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
