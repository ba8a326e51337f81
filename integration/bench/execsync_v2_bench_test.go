package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
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
	runtimes := startExecRuntimes(b, reg, image, pause)
	for _, r := range runtimes {
		if v, err := r.rt.Version(context.Background(), &runtimeapi.VersionRequest{}); err == nil {
			r.name += " " + v.RuntimeVersion
		}
	}
	sampleExecSync(b, runtimes, samples, 60)
	c := runtimes[2]
	var out strings.Builder
	fmt.Fprintf(&out, "\nExecSync `true` x%d per runtime (alternating), host-network pods, same run\n", samples*b.N)
	for _, r := range runtimes {
		fmt.Fprintf(&out, "%-40s p50 %10s  p99 %10s  p50/containerd %.2f  p99/containerd %.2f\n", r.name,
			r.pct(50).Round(10*time.Microsecond), r.pct(99).Round(10*time.Microsecond),
			float64(r.pct(50))/float64(c.pct(50)), float64(r.pct(99))/float64(c.pct(99)))
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
