package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const densityPods = 50

// BenchmarkDensity measures what each runtime adds per pod at 50 pods of
// one `sleep 3600` container each, host network on both (no CNI): the PSS
// (/proc/PID/smaps_rollup) of the processes the runtime runs per pod
// (peapod: keeper, and PID holder when there is one; containerd 1.6: shim +
// pause) summed and divided by 50, and the daemon's RSS at 0 and 50 pods.
// The rule is that of ../shared/critest/measure-density.sh: processes that
// appear with the pods, descend from the daemon or name a pod in their
// command line, minus the containers' own processes. Goals (issue 7):
// per-pod PSS <= 180 KiB, daemon RSS growth <= 40 KiB per pod.
func BenchmarkDensity(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	reg, image, pause := runtimeBenchRegistry(b)

	results := map[string]density{}
	runtimes := []struct {
		name, exe string
		start     func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient)
	}{
		{"peapod", "peapod", func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient) {
			return startPeapodDaemon(b, reg)
		}},
		{"containerd", "containerd", func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient) {
			ep := startContainerd(b, reg, pause)
			return ep.rt, ep.img
		}},
	}
	for _, rt := range runtimes {
		b.Run(rt.name, func(b *testing.B) {
			rtc, img := rt.start()
			daemon := childNamed(rt.exe)
			if daemon == 0 {
				b.Fatalf("no %s process among this test's children", rt.exe)
			}
			for i := 0; i < b.N; i++ {
				results[rt.name] = measureDensity(b, rtc, img, image, daemon)
			}
		})
	}

	p, c := results["peapod"], results["containerd"]
	var out strings.Builder
	fmt.Fprintf(&out, "\ndensity: %d host-network pods x 1 `sleep 3600`, same run; per pod = PSS of the runtime's per-pod processes / %d\n", densityPods, densityPods)
	fmt.Fprintf(&out, "%-30s %12s %12s %18s\n", "metric", "peapod", "containerd", "containerd/peapod")
	row := func(name string, pv, cv float64, unit string) {
		r := "-"
		if pv > 0 {
			r = fmt.Sprintf("%.1f", cv/pv)
		}
		fmt.Fprintf(&out, "%-30s %12s %12s %18s\n", name, fmt.Sprintf("%.0f %s", pv, unit), fmt.Sprintf("%.0f %s", cv, unit), r)
	}
	row("per-pod PSS", p.perPodPss, c.perPodPss, "KiB")
	row("per-pod RSS", p.perPodRss, c.perPodRss, "KiB")
	fmt.Fprintf(&out, "%-30s %12d %12d\n", "per-pod processes (total)", p.processes, c.processes)
	row("daemon RSS, 0 pods", p.daemonRss0, c.daemonRss0, "KiB")
	row("daemon RSS, 50 pods", p.daemonRss50, c.daemonRss50, "KiB")
	row("daemon RSS growth per pod", (p.daemonRss50-p.daemonRss0)/densityPods, (c.daemonRss50-c.daemonRss0)/densityPods, "KiB")
	row("50 pods started", p.startSeconds*1000, c.startSeconds*1000, "ms")
	fmt.Fprintf(&out, "goals: per-pod PSS <= 180 KiB (peapod %s), daemon RSS growth <= 40 KiB/pod (peapod %s)\n",
		verdict(p.perPodPss <= 180), verdict((p.daemonRss50-p.daemonRss0)/densityPods <= 40))
	fmt.Print(out.String())
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

type density struct {
	perPodPss, perPodRss    float64 // KiB
	processes               int
	daemonRss0, daemonRss50 float64 // KiB
	startSeconds            float64
}

// measureDensity runs the pods, measures, and removes them again.
func measureDensity(b *testing.B, rt runtimeapi.RuntimeServiceClient, img runtimeapi.ImageServiceClient, image string, daemon int) density {
	ctx := context.Background()
	if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		b.Fatalf("pull: %v", err)
	}
	var d density
	time.Sleep(2 * time.Second) // let the daemon settle after the pull
	d.daemonRss0 = float64(statusKiB(daemon, "VmRSS:"))
	before := processSet()

	var pods, ctrs []string
	defer func() {
		for _, p := range pods {
			rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p})
			rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p})
		}
	}()
	// kubelet's defaults but for the network: IPC per pod, PID per
	// container (the density rule of ../shared/critest/measure-density.sh);
	// the host network spares containerd a CNI setup.
	hostNet := &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER},
	}}
	start := time.Now()
	for i := range densityPods {
		name := fmt.Sprintf("density-%d", i)
		podCfg := &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
			Linux:    hostNet,
		}
		run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
		if err != nil {
			b.Fatalf("RunPodSandbox %d: %v", i, err)
		}
		pods = append(pods, run.PodSandboxId)
		cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  []string{"sleep", "3600"},
		}})
		if err != nil {
			b.Fatalf("CreateContainer %d: %v", i, err)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			b.Fatalf("StartContainer %d: %v", i, err)
		}
		ctrs = append(ctrs, cr.ContainerId)
	}
	d.startSeconds = time.Since(start).Seconds()
	time.Sleep(3 * time.Second) // as measure-density.sh's DENSITY_SETTLE_S

	containers := map[int]bool{}
	for _, id := range ctrs {
		resp, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
		if err != nil {
			b.Fatal(err)
		}
		var info struct{ Pid int }
		if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Pid == 0 {
			b.Fatalf("no pid in the verbose status of %s: %v", id, err)
		}
		containers[info.Pid] = true
	}
	procs := allProcesses()
	for _, pr := range procs {
		if before[pr.key()] || pr.pid == daemon || pr.kernel || descendsFrom(procs, pr.pid, containers) {
			continue
		}
		if !descendsFrom(procs, pr.pid, map[int]bool{daemon: true}) && !namesAny(procs, pr.pid, pods) {
			continue
		}
		d.perPodPss += float64(rollupKiB(pr.pid, "Pss:"))
		d.perPodRss += float64(rollupKiB(pr.pid, "Rss:"))
		d.processes++
	}
	d.perPodPss /= densityPods
	d.perPodRss /= densityPods
	d.daemonRss50 = float64(statusKiB(daemon, "VmRSS:"))
	return d
}

type process struct {
	pid, ppid int
	start     string
	cmdline   string
	kernel    bool
}

func (p process) key() string { return strconv.Itoa(p.pid) + "/" + p.start }

// allProcesses reads pid, parent, start time and command line of every process.
func allProcesses() map[int]process {
	entries, _ := os.ReadDir("/proc")
	out := map[int]process{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 20 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out[pid] = process{pid: pid, ppid: ppid, start: f[19], cmdline: string(cmd), kernel: len(cmd) == 0 && (ppid == 2 || pid == 2)}
	}
	return out
}

func processSet() map[string]bool {
	set := map[string]bool{}
	for _, p := range allProcesses() {
		set[p.key()] = true
	}
	return set
}

// descendsFrom reports whether pid or one of its ancestors is in roots.
func descendsFrom(procs map[int]process, pid int, roots map[int]bool) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if roots[pid] {
			return true
		}
		pid = procs[pid].ppid
	}
	return false
}

// namesAny reports whether pid or an ancestor names one of ids in its
// command line (containerd's shim: -id <pod>).
func namesAny(procs map[int]process, pid int, ids []string) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		for _, id := range ids {
			if strings.Contains(procs[pid].cmdline, id) {
				return true
			}
		}
		pid = procs[pid].ppid
	}
	return false
}

// childNamed finds this test's child process whose executable is named exe.
func childNamed(exe string) int {
	me := os.Getpid()
	for _, p := range allProcesses() {
		if p.ppid != me {
			continue
		}
		if path, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid)); strings.HasSuffix(path, "/"+exe) {
			return p.pid
		}
	}
	return 0
}

func rollupKiB(pid int, key string) int {
	return fieldKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), key)
}
func statusKiB(pid int, key string) int { return fieldKiB(fmt.Sprintf("/proc/%d/status", pid), key) }

// fieldKiB reads "Key:   N kB" from a /proc file.
func fieldKiB(path, key string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), key); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}
