package bench

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPSSMethods explains why `make bench` before issue 21 reported a
// per-pod PSS of 151 KiB for peapod with its built-in network while
// ../shared/critest/measure-density.sh measured 206 KiB: it measures one
// peapod daemon with each method and the steps between them, one variable
// at a time, and prints the per-pod PSS and where it sits (by command):
//
//	old bench  100 pods, in-process gRPC client, no log directory or path
//	           50 pods, the same
//	           50 pods, in-process gRPC, pod log directory + container log path
//	script     50 pods through crictl (runp/create/start), with logs: the
//	           method of measure-density.sh and of make bench since issue 21
//
// Alone: go test -tags "$(cat build-tags.txt)" -run '^$' -bench BenchmarkPSSMethods -benchtime 1x ./integration/bench/
func BenchmarkPSSMethods(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ensureAnchors(b) // crictl
	reg, image, _ := runtimeBenchRegistry(b)
	pp := startPeapodEndpointEnv(b, reg, "", "3", nil)
	r := &suiteRuntime{key: "peapod-builtin", name: "peapod built-in", rt: pp.rt, img: pp.img, sock: pp.sock, daemon: pp.pid, marks: []string{pp.sock, pp.dir}}
	if _, err := r.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		b.Fatal(err)
	}
	var out strings.Builder
	report := func(name string, f *fleet, d density) {
		fmt.Fprintf(&out, "%-58s per-pod PSS %4.0f KiB  RSS %5.0f KiB  processes %d (%s)\n", name, d.perPodPss, d.perPodRss, d.processes, f.byCommand(b))
	}
	for i := 0; i < b.N; i++ {
		for _, v := range []struct {
			name string
			n    int
			logs bool
		}{{"100 pods, gRPC, no logs (make bench before issue 21)", 100, false}, {"50 pods, gRPC, no logs", 50, false}, {"50 pods, gRPC, logs", 50, true}} {
			f := grpcFleet(b, r, image, v.n, v.logs)
			d := f.measure(b)
			report(v.name, f, d)
			f.remove()
		}
		d := crictlDensity(b, crictlBin(), r, image, 50, 0, 0)
		fmt.Fprintf(&out, "%-58s per-pod PSS %4.0f KiB  RSS %5.0f KiB  processes %d\n", "50 pods, crictl, logs (measure-density.sh)", d.perPodPss, d.perPodRss, d.processes)
	}
	fmt.Print("\nper-pod PSS of peapod (built-in network) by method, one daemon, same run\n" + out.String())
}

// grpcFleet starts n pods one after another through the bench's own CRI
// client, each with one `sleep 3600` container, kubelet's namespaces, and
// (logs) a pod log directory and container log path.
func grpcFleet(b *testing.B, r *suiteRuntime, image string, n int, logs bool) *fleet {
	ctx := context.Background()
	time.Sleep(2 * time.Second)
	f := &fleet{rt: r.rt, daemon: r.daemon, marks: r.marks, before: processSet()}
	f.d.pods = n
	logDir := b.TempDir()
	for i := range n {
		cfg := benchPod(fmt.Sprintf("pss-%d-%d", i, time.Now().UnixNano()), logDir)
		ctr := sleepContainer(image)
		if !logs {
			cfg.LogDirectory, ctr.LogPath = "", ""
		}
		pod, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			f.remove()
			b.Fatalf("RunPodSandbox: %v", err)
		}
		f.pods = append(f.pods, pod.PodSandboxId)
		cr, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: cfg, Config: ctr})
		if err == nil {
			_, err = r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
		}
		if err != nil {
			f.remove()
			b.Fatalf("container: %v", err)
		}
		f.ctrs = append(f.ctrs, cr.ContainerId)
	}
	return f
}

// byCommand is "comm n×, PSS KiB" of the fleet's counted processes.
func (f *fleet) byCommand(b *testing.B) string {
	type agg struct{ n, pss int }
	by := map[string]*agg{}
	for _, pr := range f.runtimeProcesses(f.containerPIDs(b)) {
		if pr.pid == f.daemon {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pr.pid))
		k := strings.TrimSpace(string(comm))
		if by[k] == nil {
			by[k] = &agg{}
		}
		by[k].n++
		by[k].pss += rollupKiB(pr.pid, "Pss:")
	}
	var parts []string
	for k, a := range by {
		parts = append(parts, fmt.Sprintf("%s %d× %d KiB", k, a.n, a.pss))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
