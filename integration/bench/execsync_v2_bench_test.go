package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkExecSyncRatio is BenchmarkStreaming's ExecSync part alone, for
// the cgroup v2 guest (docs/performance.md): `true` through ExecSync on
// peapod (the C helper, cloned into the container's cgroup), on peapod with
// PEAPOD_EXEC_PATH=libcontainer, and on containerd (PEAPOD_BENCH_CONTAINERD:
// 2.x there), samples alternating between them, host-network pods. It
// prints p50/p99 and the ratios to containerd: the guest is emulated, so
// only the ratios mean something. PEAPOD_BENCH_EXEC_SAMPLES (100) per
// runtime.
func BenchmarkExecSyncRatio(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	samples, _ := strconv.Atoi(cmp.Or(os.Getenv("PEAPOD_BENCH_EXEC_SAMPLES"), "100"))
	reg, image, pause := runtimeBenchRegistry(b)
	type runtime struct {
		name    string
		rt      runtimeapi.RuntimeServiceClient
		ctr     string
		samples []time.Duration
	}
	var runtimes []*runtime
	for _, name := range []string{"peapod", "peapod-libcontainer", "containerd"} {
		var rt runtimeapi.RuntimeServiceClient
		var img runtimeapi.ImageServiceClient
		switch name {
		case "peapod":
			rt, img = startPeapodDaemon(b, reg)
		case "peapod-libcontainer":
			ep := startPeapodEndpointEnv(b, reg, "", "1", []string{"PEAPOD_EXEC_PATH=libcontainer"})
			rt, img = ep.rt, ep.img
		case "containerd":
			ep := startContainerd(b, reg, pause)
			rt, img = ep.rt, ep.img
		}
		ctx := context.Background()
		if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			b.Fatalf("%s: pull: %v", name, err)
		}
		ctr, pod := runWebPod(b, rt, image, freePort(b))
		b.Cleanup(func() {
			rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
			rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
		})
		if v, err := rt.Version(ctx, &runtimeapi.VersionRequest{}); err == nil {
			name += " " + v.RuntimeVersion
		}
		runtimes = append(runtimes, &runtime{name: name, rt: rt, ctr: ctr})
	}
	for i := 0; i < b.N; i++ {
		for j := 0; j < samples; j++ {
			for _, r := range runtimes {
				start := time.Now()
				resp, err := r.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: r.ctr, Cmd: []string{"true"}, Timeout: 60})
				if err != nil || resp.ExitCode != 0 {
					b.Fatalf("%s: ExecSync true: %v %v", r.name, err, resp)
				}
				r.samples = append(r.samples, time.Since(start))
			}
		}
	}
	for _, r := range runtimes {
		sort.Slice(r.samples, func(i, j int) bool { return r.samples[i] < r.samples[j] })
	}
	pct := func(r *runtime, q int) time.Duration { return r.samples[len(r.samples)*q/100] }
	c := runtimes[2]
	var out strings.Builder
	fmt.Fprintf(&out, "\nExecSync `true` x%d per runtime (alternating), host-network pods, same run\n", samples*b.N)
	for _, r := range runtimes {
		fmt.Fprintf(&out, "%-40s p50 %10s  p99 %10s  p50/containerd %.2f  p99/containerd %.2f\n", r.name,
			pct(r, 50).Round(10*time.Microsecond), pct(r, 99).Round(10*time.Microsecond),
			float64(pct(r, 50))/float64(pct(c, 50)), float64(pct(r, 99))/float64(pct(c, 99)))
	}
	fmt.Print(out.String())
}

// scaled stretches a daemon's start-up wait in the emulated guest, as
// PEAPOD_TEST_TIMEOUT_SCALE stretches the integration tests' waits.
func scaled(d time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv("PEAPOD_TEST_TIMEOUT_SCALE")); err == nil && n > 1 {
		return d * time.Duration(n)
	}
	return d
}
