package bench

import (
	"context"
	"fmt"
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

	"github.com/peapod-cri/peapod/network"
)

const netPods = 50

// benchConflist is the CNI config of the network bench: Debian's bridge +
// host-local + portmap on bridge, addresses from subnet, host-local state
// in ipamDir. peapod and containerd get the same one.
func benchConflist(bridge, subnet, ipamDir string) string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ppbench-%[1]s", "plugins": [
  {"type": "bridge", "bridge": %[1]q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %[3]q, "ranges": [[{"subnet": %[2]q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}`, bridge, subnet, ipamDir)
}

// guardForward drops whatever bridge would forward to another interface
// (nothing a pod sends leaves the machine), and deletes the bridge, left
// by the CNI bridge plugin, with the guard in b.Cleanup.
func guardForward(b *testing.B, bridge string) {
	b.Helper()
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`table ip ppb-guard-%[1]s {
  chain forward { type filter hook forward priority -10; iifname "%[1]s" oifname != "%[1]s" drop; }
}`, bridge))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft guard table (apt-get install nftables): %v: %s", err, out)
	}
	b.Cleanup(func() {
		exec.Command("ip", "link", "del", bridge).Run()
		exec.Command("nft", "delete", "table", "ip", "ppb-guard-"+bridge).Run()
	})
}

// benchSubnet is a 10.197.X.0/24 that no route of the host uses.
func benchSubnet(b *testing.B, x int) string {
	out, _ := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	for i := range 100 {
		prefix := fmt.Sprintf("10.197.%d.", (x+i*7)%250+1)
		if !strings.Contains(string(out), prefix) {
			return prefix + "0/24"
		}
	}
	b.Fatal("no free 10.197.X.0/24")
	return ""
}

type latency struct{ p50, p99 time.Duration }

func percentiles(d []time.Duration) latency {
	slices.Sort(d)
	return latency{d[len(d)/2], d[len(d)*99/100]}
}

// BenchmarkPodNetworkSetup measures, for netPods pods with their own
// network namespace and no container, RunPodSandbox wall time with
// peapod's built-in bridge, with peapod on a CNI bridge + host-local +
// portmap conflist, and with containerd 1.6 on the same conflist, in the
// same run; and the network part alone (SetupPod in-process, the netns
// made beforehand) for the built-in bridge and for the CNI conflist. Pods
// stay up until all netPods run, as on a busy node. It prints a table.
func BenchmarkPodNetworkSetup(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := os.Stat("/usr/lib/cni/portmap"); err != nil {
		b.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	reg, _, pause := runtimeBenchRegistry(b)
	pid := os.Getpid()
	results := map[string]latency{}

	runPods := func(b *testing.B, rt runtimeapi.RuntimeServiceClient) latency {
		ctx := context.Background()
		var took []time.Duration
		var ids []string
		defer func() {
			for _, id := range ids {
				rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
				rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			}
		}()
		for i := range netPods {
			name := fmt.Sprintf("netbench-%d-%d", i, time.Now().UnixNano())
			cfg := &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
				Linux:    &runtimeapi.LinuxPodSandboxConfig{},
			}
			start := time.Now()
			run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				b.Fatalf("RunPodSandbox: %v", err)
			}
			took = append(took, time.Since(start))
			ids = append(ids, run.PodSandboxId)
			if i == 0 {
				st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: run.PodSandboxId})
				if err != nil || st.GetStatus().GetNetwork().GetIp() == "" {
					b.Fatalf("pod has no IP: %v %v", err, st)
				}
			}
		}
		return percentiles(took)
	}

	b.Run("peapod-builtin", func(b *testing.B) {
		rt, _ := startPeapodDaemon(b, reg)
		for range b.N {
			results["peapod built-in"] = runPods(b, rt)
		}
	})
	b.Run("peapod-cni", func(b *testing.B) {
		br := "ppbc" + strconv.Itoa(pid%100000)
		guardForward(b, br)
		rt, _ := startPeapodDaemonCNI(b, reg, benchConflist(br, benchSubnet(b, pid), b.TempDir()))
		for range b.N {
			results["peapod CNI"] = runPods(b, rt)
		}
	})
	b.Run("containerd-cni", func(b *testing.B) {
		br := "ppbd" + strconv.Itoa(pid%100000)
		guardForward(b, br)
		ep := startContainerdCNI(b, reg, pause, benchConflist(br, benchSubnet(b, pid+3), b.TempDir()))
		// The pause image is pulled before, not inside, the first RunPodSandbox.
		if _, err := ep.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: pause}}); err != nil {
			b.Fatalf("pull pause: %v", err)
		}
		for range b.N {
			results["containerd CNI"] = runPods(b, ep.rt)
		}
	})

	// The network part alone, in-process: SetupPod into a namespace held by
	// a sleep child, made before the clock starts.
	setupOnly := func(b *testing.B, be network.Backend) latency {
		ctx := context.Background()
		var took []time.Duration
		var pods []network.Pod
		defer func() {
			for _, p := range pods {
				be.TeardownPod(ctx, p)
			}
		}()
		for i := range netPods {
			cmd := exec.Command("sleep", "300")
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			id := fmt.Sprintf("netbench-%d-%d", i, time.Now().UnixNano())
			p := network.Pod{ID: id, Name: id, Namespace: "bench", UID: id, NetNS: "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"}
			start := time.Now()
			if _, err := be.SetupPod(ctx, p); err != nil {
				b.Fatalf("SetupPod: %v", err)
			}
			took = append(took, time.Since(start))
			pods = append(pods, p)
		}
		return percentiles(took)
	}
	b.Run("setup-builtin", func(b *testing.B) {
		br := "ppbs" + strconv.Itoa(pid%100000)
		guardForward(b, br)
		b.Cleanup(func() {
			exec.Command("nft", "delete", "table", "ip", "peapod-"+br).Run()
			exec.Command("nft", "delete", "table", "inet", "peapod-"+br).Run()
			exec.Command("nft", "delete", "table", "bridge", "peapod-"+br).Run() // anti-spoofing
		})
		be, err := network.NewBridge(context.Background(), network.BridgeConfig{Name: br, PodCIDR: benchSubnet(b, pid+5), StateDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if err := be.Ready(); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			results["SetupPod built-in"] = setupOnly(b, be)
		}
	})
	b.Run("setup-cni", func(b *testing.B) {
		br := "ppbt" + strconv.Itoa(pid%100000)
		guardForward(b, br)
		dir := b.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "10-bench.conflist"), []byte(benchConflist(br, benchSubnet(b, pid+9), filepath.Join(dir, "ipam"))), 0o644); err != nil {
			b.Fatal(err)
		}
		be, err := network.NewCNI(context.Background(), network.CNIConfig{ConfDir: dir, BinDirs: []string{"/usr/lib/cni"}, CacheDir: filepath.Join(dir, "cache")})
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			results["SetupPod CNI"] = setupOnly(b, be)
		}
	})

	base := results["containerd CNI"]
	ratio := func(a, c time.Duration) string {
		if a == 0 || c == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", float64(a)/float64(c))
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\npod network setup: %d pods with their own netns, no container, pods kept up; CNI = bridge + host-local + portmap (same conflist), same run\n", netPods)
	fmt.Fprintf(&out, "%-34s %10s %10s %14s %14s\n", "", "p50", "p99", "p50/containerd", "p99/containerd")
	for _, row := range []struct{ key, label string }{
		{"peapod built-in", "RunPodSandbox peapod built-in"},
		{"peapod CNI", "RunPodSandbox peapod CNI"},
		{"containerd CNI", "RunPodSandbox containerd 1.6 CNI"},
		{"SetupPod built-in", "network only: built-in SetupPod"},
		{"SetupPod CNI", "network only: CNI SetupPod"},
	} {
		r := results[row.key]
		fmt.Fprintf(&out, "%-34s %10s %10s %14s %14s\n", row.label, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond),
			ratio(r.p50, base.p50), ratio(r.p99, base.p99))
	}
	fmt.Print(out.String())
}
