package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	statsContainers = 100
	statsCalls      = 50
)

// BenchmarkListContainerStats measures one ListContainerStats call (what
// kubelet's summary API makes every 10-15 s) with 100 running containers,
// one per host-network pod, each with a memory limit as kubelet sets one,
// for peapod and containerd 1.6 in the same run. Goal (issue 4): peapod's
// time per call at most 0.3x containerd's.
func BenchmarkListContainerStats(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	reg, image, pause := runtimeBenchRegistry(b)
	results := map[string]latency{}
	means, firsts := map[string]time.Duration{}, map[string]time.Duration{}
	for _, name := range []string{"peapod", "containerd"} {
		b.Run(name, func(b *testing.B) {
			var rt runtimeapi.RuntimeServiceClient
			var img runtimeapi.ImageServiceClient
			if name == "peapod" {
				rt, img = startPeapodDaemon(b, reg)
			} else {
				ep := startContainerd(b, reg, pause)
				rt, img = ep.rt, ep.img
			}
			pull(b, context.Background(), runtimeUnderTest{name: name, img: img}, image)
			pods := startStatsPods(b, rt, image)
			defer removeStatsPods(rt, pods)
			for i := 0; i < b.N; i++ {
				results[name], means[name], firsts[name] = measureListStats(b, rt)
			}
		})
	}
	p, c := results["peapod"], results["containerd"]
	fmt.Printf("\nListContainerStats with %d running containers, %d calls each, same run\n", statsContainers, statsCalls)
	fmt.Printf("%-12s %10s %10s %10s %12s\n", "runtime", "mean ms", "p50 ms", "p99 ms", "first ms")
	for _, name := range []string{"peapod", "containerd"} {
		r := results[name]
		fmt.Printf("%-12s %10.2f %10.2f %10.2f %12.2f\n", name, ms(means[name]), ms(r.p50), ms(r.p99), ms(firsts[name]))
	}
	fmt.Println("(first: the first call after the containers started; peapod then measures every writable layer, later calls within 10 s reuse it, as containerd's CRI reuses its 10 s collection)")
	if means["containerd"] > 0 {
		ratio := float64(means["peapod"]) / float64(means["containerd"])
		fmt.Printf("peapod/containerd (mean) %.2f, p50 %.2f; goal <= 0.3: %s\n", ratio, float64(p.p50)/float64(c.p50), verdict(ratio <= 0.3))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startStatsPods starts the pods, one `sleep 3600` container each with a
// 64 MiB limit, and returns the pod IDs.
func startStatsPods(b *testing.B, rt runtimeapi.RuntimeServiceClient, image string) []string {
	ctx := context.Background()
	var pods []string
	stamp := time.Now().UnixNano()
	for i := range statsContainers {
		name := fmt.Sprintf("stats-%d-%d", i, stamp)
		podCfg := &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER},
			}},
		}
		run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
		if err != nil {
			removeStatsPods(rt, pods)
			b.Fatalf("RunPodSandbox %d: %v", i, err)
		}
		pods = append(pods, run.PodSandboxId)
		cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  []string{"sleep", "3600"},
			Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 102}},
		}})
		if err == nil {
			_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
		}
		if err != nil {
			removeStatsPods(rt, pods)
			b.Fatalf("container %d: %v", i, err)
		}
	}
	return pods
}

func removeStatsPods(rt runtimeapi.RuntimeServiceClient, pods []string) {
	for _, id := range pods {
		rt.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	}
}

// measureListStats times statsCalls calls after a few to warm up, checking
// each reports every container with CPU and memory; and the first call.
func measureListStats(b *testing.B, rt runtimeapi.RuntimeServiceClient) (latency, time.Duration, time.Duration) {
	ctx := context.Background()
	call := func() time.Duration {
		t0 := time.Now()
		resp, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("ListContainerStats: %v", err)
		}
		if len(resp.Stats) != statsContainers {
			b.Fatalf("ListContainerStats: %d stats, want %d", len(resp.Stats), statsContainers)
		}
		for _, s := range resp.Stats {
			if s.GetCpu().GetUsageCoreNanoSeconds() == nil || s.GetMemory().GetWorkingSetBytes() == nil {
				b.Fatalf("ListContainerStats: container %s without cpu or memory: %v", s.GetAttributes().GetId(), s)
			}
		}
		return d
	}
	first := call()
	for range 4 {
		call()
	}
	var d []time.Duration
	var sum time.Duration
	for range statsCalls {
		t := call()
		d = append(d, t)
		sum += t
		time.Sleep(20 * time.Millisecond) // kubelet's calls are apart; no back-to-back caching artefacts
	}
	slices.Sort(d)
	return percentiles(d), sum / statsCalls, first
}
