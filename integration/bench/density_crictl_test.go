package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// crictlDensityResult is one runtime's density round.
type crictlDensityResult struct {
	density
	stats     []time.Duration // ListContainerStats at that density
	steadyCPU float64         // runtime CPU s/min under kubelet-like polling (0: not measured)
}

// crictlDensity measures a runtime as ../shared/critest/measure-density.sh
// does: n pods started one after another, each by three crictl commands
// (runp, create, start: a new process and connection each, as an operator
// or the harness drives a runtime), one `sleep 3600` container per pod,
// kubelet's default namespaces (network and IPC per pod, PID per
// container), a log directory and log path; a warm-up pod first, 3 s to
// settle before the process snapshot and again before measuring. The
// per-pod PSS follows the script's rule: processes that appeared with the
// pods and descend from the daemon or name one of the pods, containers,
// the socket or the runtime's directory in their command line, minus the
// containers' own processes (verbose ContainerStatus pid and descendants)
// and the daemon, summed from smaps_rollup and divided by n. Then
// statsCalls ListContainerStats calls and, when steady > 0, kubelet-like
// polling for that long. The pods are removed at the end.
func crictlDensity(b *testing.B, crictl string, r *suiteRuntime, image string, n, statsCalls int, steady time.Duration) crictlDensityResult {
	dir := b.TempDir()
	conf := filepath.Join(dir, "crictl.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n", r.sock, r.sock), 0o644); err != nil {
		b.Fatal(err)
	}
	f := &fleet{rt: r.rt, daemon: r.daemon, marks: r.marks}
	cc := func(args ...string) string {
		out, err := exec.Command(crictl, append([]string{"--config", conf}, args...)...).Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = string(ee.Stderr)
			}
			f.remove()
			b.Fatalf("%s: crictl %s: %v %s", r.name, strings.Join(args, " "), err, msg)
		}
		return strings.TrimSpace(string(out))
	}
	stamp := time.Now().UnixNano()
	podFiles := func(i string) (pod, ctr string) {
		pod, ctr = filepath.Join(dir, "pod-"+i+".json"), filepath.Join(dir, "ctr-"+i+".json")
		ns := `"namespace_options":{"network":0,"pid":1,"ipc":0}`
		os.WriteFile(pod, fmt.Appendf(nil, `{"metadata":{"name":"density-%s","namespace":"bench-density","uid":"bench-density-%d-%s","attempt":0},
 "log_directory":%q, "linux":{"security_context":{%s}}}`, i, stamp, i, filepath.Join(dir, "logs", "pod-"+i), ns), 0o644)
		os.WriteFile(ctr, fmt.Appendf(nil, `{"metadata":{"name":"sleep"},"image":{"image":%q},"command":["sleep","3600"],"log_path":"sleep.log",
 "linux":{"security_context":{%s}}}`, image, ns), 0o644)
		return pod, ctr
	}
	// Warm-up: the sandbox image, the daemon's caches.
	wp, wc := podFiles("warmup")
	p := cc("runp", wp)
	c := cc("create", p, wc, wp)
	cc("start", c)
	cc("stop", "-t", "0", c)
	cc("rmp", "-f", p)
	time.Sleep(3 * time.Second)

	f.before = processSet()
	f.d.pods = n
	f.d.daemonRss0 = float64(statusKiB(r.daemon, "VmRSS:"))
	cpu0 := f.cpu()
	t0 := time.Now()
	for i := range n {
		pf, cf := podFiles(fmt.Sprint(i))
		p := cc("runp", pf)
		f.pods = append(f.pods, p)
		c := cc("create", p, cf, pf)
		f.ctrs = append(f.ctrs, c)
		cc("start", c)
	}
	f.d.start = time.Since(t0)
	f.d.cpuSeconds = f.cpu() - cpu0
	res := crictlDensityResult{density: f.measure(b)}

	ctx := context.Background()
	for range statsCalls {
		t := time.Now()
		resp, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		d := time.Since(t)
		if err != nil || len(resp.Stats) < n {
			f.remove()
			b.Fatalf("%s: ListContainerStats: %v (%d stats for %d containers)", r.name, err, len(resp.GetStats()), n)
		}
		res.stats = append(res.stats, d)
		time.Sleep(100 * time.Millisecond) // the kubelet's calls are apart
	}
	if steady > 0 {
		res.steadyCPU = steadyCPU(b, f, steady)
	}
	for _, c := range f.ctrs {
		r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c, Timeout: 0})
	}
	f.remove()
	return res
}
