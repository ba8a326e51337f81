// Package bench compares peapod with the anchors (containerd 1.6 and 2.4,
// CRI-O) on the same machine, registry and images, in the same run: `make
// bench` (BenchmarkPerformance) and the older benches of `make bench-all`.
// Every runtime is a daemon driven through CRI over its socket, as the
// kubelet would; image pulls too (BenchmarkImagePull: the peapod daemon
// and containerd 1.6 with the config in containerd.toml.tmpl).
package bench

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.podman.io/storage/pkg/reexec"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

//go:embed containerd.toml.tmpl
var containerdConfig string

//go:embed hosts.toml.tmpl
var hostsConfig string

// containerdBin is Debian's containerd 1.6, or the one PEAPOD_BENCH_CONTAINERD
// names (containerd 2.x in the cgroup v2 guest, docs/performance.md).
var containerdBin = cmp.Or(os.Getenv("PEAPOD_BENCH_CONTAINERD"), "/usr/bin/containerd")

func TestMain(m *testing.M) {
	if reexec.Init() { // containers/storage re-executes the test binary
		return
	}
	os.Exit(m.Run())
}

// The bench image: 5 layers of random data, 10 MiB each.
const (
	benchLayers     = 5
	benchLayerBytes = 10 << 20
	parallelPulls   = 10
	pullRounds      = 7
)

type runtimeUnderTest struct {
	name string
	img  runtimeapi.ImageServiceClient
}

// BenchmarkImagePull pulls a 5-layer 50 MiB image cold (not present),
// warm (present: manifest check only) and 10 times at once (cold), with
// peapod and with containerd, pullRounds times each, then prints a table
// of medians and minimums.
func BenchmarkImagePull(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	reg := testenv.StartRegistry(b)
	img, err := testenv.RandomImage(benchLayers, benchLayerBytes, 42)
	if err != nil {
		b.Fatal(err)
	}
	ref := reg + "/bench/layers5:1"
	testenv.Push(b, ref, img, "", "")

	rts := []runtimeUnderTest{
		// Through the daemon's CRI PullImage, as containerd's.
		{"peapod", startPeapodEndpoint(b, reg, "").img},
		{"containerd", startContainerd(b, reg, "").img},
	}
	scenarios := []struct {
		name    string
		present bool // image present before each pull
		pulls   int
	}{
		{"cold", false, 1},
		{"warm", true, 1},
		{fmt.Sprintf("parallel%d", parallelPulls), false, parallelPulls},
	}
	// samples[scenario][runtime]: pullRounds rounds, the runtimes taking
	// turns within a round (the first alternating), so that both meet the
	// same load.
	samples := map[string]map[string][]time.Duration{}
	ctx := context.Background()
	for _, sc := range scenarios {
		samples[sc.name] = map[string][]time.Duration{}
		for round := 0; round < pullRounds; round++ {
			for k := range rts {
				rt := rts[(k+round)%len(rts)]
				if sc.present {
					pull(b, ctx, rt, ref)
				} else {
					remove(b, ctx, rt, ref)
				}
				start := time.Now()
				var wg sync.WaitGroup
				for j := 0; j < sc.pulls; j++ {
					wg.Add(1)
					go func() { defer wg.Done(); pull(b, ctx, rt, ref) }()
				}
				wg.Wait()
				samples[sc.name][rt.name] = append(samples[sc.name][rt.name], time.Since(start))
			}
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\nimage pull: %d layers x %d MiB random data (%s), same registry, same run, %d rounds (p50, min)\n",
		benchLayers, benchLayerBytes>>20, ref, pullRounds)
	fmt.Fprintf(&out, "%-12s %12s %12s %14s %14s %10s\n", "scenario", "peapod p50", "ctrd p50", "peapod min", "ctrd min", "p50 x")
	for _, sc := range scenarios {
		p, c := samples[sc.name]["peapod"], samples[sc.name]["containerd"]
		if len(p) == 0 || len(c) == 0 {
			continue
		}
		pl, cl := percentiles(p), percentiles(c)
		fmt.Fprintf(&out, "%-12s %12s %12s %14s %14s %10.2f\n", sc.name, pl.p50.Round(time.Millisecond), cl.p50.Round(time.Millisecond),
			slices.Min(p).Round(time.Millisecond), slices.Min(c).Round(time.Millisecond), float64(pl.p50)/float64(cl.p50))
		b.ReportMetric(float64(pl.p50)/float64(cl.p50), sc.name+"-x")
	}
	fmt.Print(out.String())
}

func pull(b *testing.B, ctx context.Context, rt runtimeUnderTest, ref string) {
	if _, err := rt.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Errorf("%s: PullImage %s: %v", rt.name, ref, err)
	}
}

// remove removes the image and checks it is gone, so the next pull is cold.
func remove(b *testing.B, ctx context.Context, rt runtimeUnderTest, ref string) {
	if _, err := rt.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		b.Fatalf("%s: RemoveImage %s: %v", rt.name, ref, err)
	}
	st, err := rt.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || st.Image != nil {
		b.Fatalf("%s: image %s still there after RemoveImage: %v", rt.name, ref, err)
	}
}

func dial(b *testing.B, sock string) *grpc.ClientConn {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}
