package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeLayerStats: a container owns its writable layer and can make
// its walk long and large — 20,000 files in one directory, a chain of
// 400 directories (8 KB of path, past PATH_MAX), hard links. The
// stats calls the kubelet makes every few seconds must not wait for that
// walk (before, ListContainerStats walked every layer inline), and what the
// container hid deep down must still be counted.
func TestEscapeLayerStats(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	release := filepath.Join(d.Dir, "release-walks")
	d.Env = append(d.Env, "PEAPOD_FAILPOINTS=layer-usage-walk=hold:"+release)
	d.Start()
	pullAll(t, d, image)
	podCfg := podConfig("layerwalk", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	// The chain is built bottom-up by moving it into a new parent each
	// time, so no path the shell handles is long (busybox's cd fails past
	// PATH_MAX; the kernel and the walk do not care).
	id := startContainer(t, d, pod, podCfg, containerConfig("filler", image, "sh", "-c", `
mkdir /many && cd /many && seq 1 20000 | xargs touch
i=0; while [ $i -lt 200 ]; do ln /many/1 /many/link$i; i=$((i+1)); done
mkdir -p /deep/c && cd /deep && head -c 777777 /dev/zero > c/hidden
i=0; while [ $i -lt 400 ]; do mkdir n && mv c n/dddddddddddddddddddd && mv n c; i=$((i+1)); done
touch /done; exec sleep 1000`))
	waitFor(t, 240*time.Second, "the container to fill its layer", func() bool {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"test", "-e", "/done"}, Timeout: 10})
		return err == nil && r.ExitCode == 0
	})

	// Walks are held: every stats call still answers, within the wait for a
	// first measurement (2 s) plus slack, with no writable layer yet.
	for _, call := range []struct {
		name string
		do   func(context.Context) (*runtimeapi.ContainerStats, error)
	}{
		{"ListContainerStats", func(c context.Context) (*runtimeapi.ContainerStats, error) {
			r, err := d.RT.ListContainerStats(c, &runtimeapi.ListContainerStatsRequest{})
			if err != nil || len(r.Stats) != 1 {
				return nil, err
			}
			return r.Stats[0], nil
		}},
		{"ContainerStats", func(c context.Context) (*runtimeapi.ContainerStats, error) {
			r, err := d.RT.ContainerStats(c, &runtimeapi.ContainerStatsRequest{ContainerId: id})
			return r.GetStats(), err
		}},
	} {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		st, err := call.do(c)
		cancel()
		if err != nil || st == nil {
			t.Fatalf("%s while a walk is held: %v (stats %v)", call.name, err, st)
		}
		if st.WritableLayer != nil {
			t.Errorf("%s: a writable layer measured while its walk is held: %v", call.name, st.WritableLayer)
		}
		t.Logf("%s answered in %v with the walk held", call.name, time.Since(start))
	}
	if _, err := d.RT.ListPodSandboxStats(ctx(t), &runtimeapi.ListPodSandboxStatsRequest{}); err != nil {
		t.Errorf("ListPodSandboxStats while a walk is held: %v", err)
	}

	// Released, the measurement arrives and counts everything: 20,000
	// files (the 200 links to one of them once), 401 directories and
	// the file at the bottom of the chain.
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var layer *runtimeapi.FilesystemUsage
	waitFor(t, 120*time.Second, "the writable layer's measurement", func() bool {
		r, err := d.RT.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
		if err == nil {
			layer = r.GetStats().GetWritableLayer()
		}
		return layer != nil
	})
	inodes, bytes := layer.GetInodesUsed().GetValue(), layer.GetUsedBytes().GetValue()
	t.Logf("writable layer: %d inodes, %d bytes", inodes, bytes)
	if inodes < 20000+401+1 || inodes > 20000+401+100 {
		t.Errorf("writable layer inodes %d, want 20402 and a few more (/done, /many, /deep…)", inodes)
	}
	if bytes < 777777 || bytes > 777777+4096 {
		t.Errorf("writable layer bytes %d, want the 777777 hidden 401 levels down (and little else)", bytes)
	}
}
