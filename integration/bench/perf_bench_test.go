package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sizes of the performance suite (issue 10), kept small enough for `make
// bench` to finish in a few minutes on 2 shared cores.
const (
	startSamples   = 20               // pod starts one at a time
	startRounds    = 3                // rounds of startParallel pods at once
	startParallel  = 10               //
	steadyWindow   = 30 * time.Second // kubelet-like polling window, scaled to a minute
	steadyInterval = time.Second
)

// suiteRuntime is one runtime under test in the suite.
type suiteRuntime struct {
	name   string
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
	sock   string
	daemon int    // PID of the daemon
	marker string // in the command line of its per-pod processes (containerd's shims: the socket)
}

// BenchmarkPerformance is `make bench`: peapod and Debian's containerd 1.6
// (CNI bridge + host-local + portmap, a registry mirror, restrict_oom_score_adj)
// started side by side against one local registry, the same workloads on
// both, one table with p50/p99 and the ratio peapod/containerd:
//   - critest --benchmark (critest_params.yaml: the sizes of
//     ../shared/critest/benchmark-params.yaml, images from the bench registry);
//   - pod start: RunPodSandbox + CreateContainer + StartContainer (the
//     process runs when StartContainer returns), 1 at a time and 10 at a time;
//   - density: 100 pods of one `sleep` container one after another: total
//     time (and at 50), runtime CPU seconds, daemon RSS, per-pod PSS;
//   - steady state with the 100 pods: runtime CPU per minute under kubelet-like
//     polling (ListPodSandbox + ListContainers + ListContainerStats each second).
//
// critest, density and the polling run on one runtime, then the other
// (the other idle with no pods); the pod starts alternate between them
// sample by sample and round by round, so that both meet the same load of
// a shared machine.
//
// Every pod has its own network namespace (kubelet's defaults), so
// containerd pays for its CNI plugins and peapod for its built-in bridge.
// "Runtime CPU" is the daemon plus every process it runs for the pods,
// each with its reaped children: for containerd the shims, pause processes,
// runc and CNI plugins; for peapod the keepers and their runners.
func BenchmarkPerformance(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := os.Stat("/usr/lib/cni/portmap"); err != nil {
		b.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	critest := critestBinary(b)
	reg, image, pause := runtimeBenchRegistry(b)
	critestImages := pushCritestImages(b, reg)

	pid := os.Getpid()
	pp := startPeapodEndpoint(b, reg, "")
	br := "ppbd" + strconv.Itoa(pid%100000)
	guardForward(b, br)
	cd := startContainerdCNI(b, reg, pause, benchConflist(br, benchSubnet(b, pid+3), b.TempDir()))
	runtimes := []*suiteRuntime{
		{name: "peapod", rt: pp.rt, img: pp.img, sock: pp.sock, daemon: childNamed("peapod")},
		{name: "containerd", rt: cd.rt, img: cd.img, sock: cd.sock, daemon: childNamed("containerd"), marker: cd.sock},
	}
	ctx := context.Background()
	for _, r := range runtimes {
		if r.daemon == 0 {
			b.Fatalf("no %s process among this test's children", r.name)
		}
		for _, ref := range []string{image, pause} {
			if _, err := r.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
				b.Fatalf("%s: pull %s: %v", r.name, ref, err)
			}
		}
	}

	t := newTable("peapod", "containerd")
	load0 := loadAvg()
	began := time.Now()
	for i := 0; i < b.N; i++ {
		if critest != "" {
			for _, r := range runtimes {
				res := runCritestBenchmark(b, critest, r.sock, critestImages)
				for _, op := range critestOps {
					t.add("critest "+op, r.name, res[op])
				}
			}
		}
		// Pod starts alternate between the runtimes sample by
		// sample, so that both meet the same load of a shared machine.
		starts := map[string][]time.Duration{}
		for range startSamples {
			for _, r := range runtimes {
				starts[r.name] = append(starts[r.name], podStarts(b, r.rt, image, 1, 1)...)
			}
		}
		for _, r := range runtimes {
			t.add("pod start, 1 at a time", r.name, starts[r.name])
		}
		starts = map[string][]time.Duration{}
		for range startRounds {
			for _, r := range runtimes {
				starts[r.name] = append(starts[r.name], podStarts(b, r.rt, image, startParallel, 1)...)
			}
		}
		for _, r := range runtimes {
			t.add(fmt.Sprintf("pod start, %d at a time", startParallel), r.name, starts[r.name])
		}
		// Density: one runtime's 100 pods at a time, the other idle with
		// none (as measure-density.sh measures), so that neither's pods
		// weigh on the other's times.
		for _, r := range runtimes {
			fleets := startFleets(b, []fleetTarget{{rt: r.rt, daemon: r.daemon, marker: r.marker}}, image, densityPods, false)
			d := fleets[0].measure(b)
			cpuMin := steadyCPU(b, fleets)[0]
			fleets[0].remove()
			t.value("density: 50 pods one after another (s)", r.name, d.start50.Seconds())
			t.value(fmt.Sprintf("density: %d pods one after another (s)", densityPods), r.name, d.start.Seconds())
			t.value(fmt.Sprintf("density: runtime CPU for %d pods (s)", densityPods), r.name, d.cpuSeconds)
			t.value(fmt.Sprintf("density: daemon RSS at %d pods (MiB)", densityPods), r.name, d.daemonRssN/1024)
			t.value("density: per-pod PSS (KiB)", r.name, d.perPodPss)
			t.value("density: per-pod RSS (KiB)", r.name, d.perPodRss)
			t.value(fmt.Sprintf("steady %d pods, polled 1/s: runtime CPU (s/min)", densityPods), r.name, cpuMin)
		}
	}
	fmt.Printf("\nperformance suite: peapod vs containerd 1.6.20 (CNI bridge), same run, %s; load average %s at start, %s at end; CPU = daemon + its per-pod processes (containerd: + shims, pause, runc, CNI plugins)\n",
		time.Since(began).Round(time.Second), load0, loadAvg())
	fmt.Print(t.String())
}

// loadAvg is the 1, 5 and 15 minute load average.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:3], " ")
}

// podStarts runs rounds of `parallel` pods at once (each
// RunPodSandbox + CreateContainer + StartContainer of `sleep 3600`, own
// network namespace, kubelet's namespace defaults, a CRI log file) and
// returns the wall time of each; the pods are removed after each round.
func podStarts(b *testing.B, rt runtimeapi.RuntimeServiceClient, image string, parallel, rounds int) []time.Duration {
	ctx := context.Background()
	logDir := b.TempDir()
	var took []time.Duration
	for round := range rounds {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			pods []string
			errs []error
		)
		for i := range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("start-%d-%d-%d", round, i, time.Now().UnixNano())
				cfg := &runtimeapi.PodSandboxConfig{
					Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
					LogDirectory: filepath.Join(logDir, name),
					Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
						NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
					}},
				}
				start := time.Now()
				pod, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
				if err == nil {
					mu.Lock()
					pods = append(pods, pod.PodSandboxId)
					mu.Unlock()
					var cr *runtimeapi.CreateContainerResponse
					cr, err = rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: cfg, Config: &runtimeapi.ContainerConfig{
						Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
						Image:    &runtimeapi.ImageSpec{Image: image},
						Command:  []string{"sleep", "3600"},
						LogPath:  "sleep/0.log",
					}})
					if err == nil {
						_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
					}
				}
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				took = append(took, d)
			}()
		}
		wg.Wait()
		for _, p := range pods {
			rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p})
			rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p})
		}
		if len(errs) > 0 {
			b.Fatalf("pod start: %v", errs[0])
		}
	}
	return took
}

// steadyCPU polls each fleet's runtime as the kubelet does
// (ListPodSandbox, ListContainers, ListContainerStats once a second) for
// steadyWindow, all of them in each second, and returns each runtime's CPU
// seconds per minute meanwhile.
func steadyCPU(b *testing.B, fleets []*fleet) []float64 {
	ctx := context.Background()
	procs := make([][]process, len(fleets))
	for i, f := range fleets {
		procs[i] = f.runtimeProcesses(f.containerPIDs(b))
	}
	ticks := func(i int) int {
		var n int
		for _, pr := range procs[i] {
			n += cpuTicks(pr.pid)
		}
		return n
	}
	c0 := make([]int, len(fleets))
	for i := range fleets {
		c0[i] = ticks(i)
	}
	t0 := time.Now()
	for time.Since(t0) < steadyWindow {
		next := time.Now().Add(steadyInterval)
		for _, f := range fleets {
			if _, err := f.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
				b.Fatalf("ListPodSandbox: %v", err)
			}
			if _, err := f.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
				b.Fatalf("ListContainers: %v", err)
			}
			stats, err := f.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
			if err != nil {
				b.Fatalf("ListContainerStats: %v", err)
			}
			if len(stats.Stats) < len(f.ctrs) {
				b.Fatalf("ListContainerStats: %d stats for %d containers", len(stats.Stats), len(f.ctrs))
			}
		}
		time.Sleep(time.Until(next))
	}
	minutes := time.Since(t0).Minutes()
	out := make([]float64, len(fleets))
	for i := range fleets {
		out[i] = float64(ticks(i)-c0[i]) / clockTicks / minutes
	}
	return out
}

// critestBinary is the critest to run: $CRITEST, else the one `make
// critest` builds (bin/critest-tools), else one built here from the tools
// module tools/critest. "" (and a note) when there is none: the critest
// rows are then left out.
func critestBinary(b *testing.B) string {
	if p := os.Getenv("CRITEST"); p != "" {
		return p
	}
	for _, p := range []string{"../../bin/critest-tools/critest"} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	if _, err := os.Stat("../../tools/critest/go.mod"); err == nil {
		out := filepath.Join(b.TempDir(), "critest")
		cmd := exec.Command("go", "test", "-c", "-o", out, "sigs.k8s.io/cri-tools/cmd/critest")
		cmd.Dir = "../../tools/critest"
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err == nil {
			return out
		} else {
			fmt.Printf("critest: build from tools/critest failed, critest rows left out: %v\n%s\n", err, msg)
		}
	}
	fmt.Println("critest: none found (set CRITEST or run make critest); critest rows left out")
	return ""
}
