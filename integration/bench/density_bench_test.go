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

const densityPods = 100

// BenchmarkDensity measures what each runtime adds per pod at 100 pods of
// one `sleep 3600` container each, host network on both (no CNI): the PSS
// (/proc/PID/smaps_rollup) of the processes the runtime runs per pod
// (peapod: keeper, and PID holder when there is one; containerd 1.6: shim +
// pause) summed and divided by the pod count, the daemon's RSS at 0 and
// 100 pods, and the CPU seconds the runtime spent starting them. The rule
// is that of ../shared/critest/measure-density.sh: processes that appear
// with the pods, descend from the daemon or name a pod (or the runtime's
// socket) in their command line, minus the containers' own processes.
// BenchmarkPerformance runs the same measurement with pod networks.
func BenchmarkDensity(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	reg, image, pause := runtimeBenchRegistry(b)

	results := map[string]density{}
	runtimes := []struct {
		name, exe string
		start     func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient, string)
	}{
		{"peapod", "peapod", func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient, string) {
			rt, img := startPeapodDaemon(b, reg)
			return rt, img, ""
		}},
		{"containerd", "containerd", func() (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient, string) {
			ep := startContainerd(b, reg, pause)
			return ep.rt, ep.img, ep.sock
		}},
	}
	for _, rt := range runtimes {
		b.Run(rt.name, func(b *testing.B) {
			rtc, img, marker := rt.start()
			daemon := childNamed(rt.exe)
			if daemon == 0 {
				b.Fatalf("no %s process among this test's children", rt.exe)
			}
			pull(b, context.Background(), runtimeUnderTest{img: img}, image)
			for i := 0; i < b.N; i++ {
				f := startFleet(b, rtc, image, densityPods, true, daemon, marker)
				results[rt.name] = f.measure(b)
				f.remove()
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
	row(fmt.Sprintf("daemon RSS, %d pods", densityPods), p.daemonRssN, c.daemonRssN, "KiB")
	row("daemon RSS growth per pod", (p.daemonRssN-p.daemonRss0)/densityPods, (c.daemonRssN-c.daemonRss0)/densityPods, "KiB")
	row(fmt.Sprintf("%d pods started", densityPods), p.start.Seconds()*1000, c.start.Seconds()*1000, "ms")
	row(fmt.Sprintf("CPU to start %d pods", densityPods), p.cpuSeconds*1000, c.cpuSeconds*1000, "ms")
	fmt.Fprintf(&out, "goals: per-pod PSS <= 180 KiB (peapod %s), daemon RSS growth <= 40 KiB/pod (peapod %s)\n",
		verdict(p.perPodPss <= 180), verdict((p.daemonRssN-p.daemonRss0)/densityPods <= 40))
	fmt.Print(out.String())
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

type density struct {
	pods                   int
	perPodPss, perPodRss   float64 // KiB
	perPodPssAnon          float64 // KiB: Pss_Anon, the part no binary's pages share
	processes              int
	daemonRss0, daemonRssN float64 // KiB
	start, start50         time.Duration
	cpuSeconds             float64 // runtime CPU spent while starting the pods
}

// fleet is a set of density pods, one `sleep 3600` container each, and
// what is needed to tell the runtime's processes from the containers'.
type fleet struct {
	rt         runtimeapi.RuntimeServiceClient
	daemon     int
	marker     string   // a string in the command line of the runtime's per-pod processes ("" = none)
	marks      []string // more such strings (an anchor's socket and private directory)
	before     map[string]bool
	pods, ctrs []string
	d          density
}

// startFleet starts n pods one after another, each with its own network
// namespace unless hostNet, with kubelet's other defaults (IPC per pod,
// PID per container; the density rule of ../shared/critest/measure-density.sh).
func startFleet(b *testing.B, rt runtimeapi.RuntimeServiceClient, image string, n int, hostNet bool, daemon int, marker string) *fleet {
	return startFleets(b, []fleetTarget{{rt: rt, daemon: daemon, marker: marker}}, image, n, hostNet)[0]
}

// fleetTarget is a runtime to start a fleet on.
type fleetTarget struct {
	rt     runtimeapi.RuntimeServiceClient
	daemon int
	marker string
}

// startFleets starts n pods on each target, one pod after another on each,
// alternating between the targets pod by pod, so that every runtime meets
// the same load of a shared machine. A fleet's start time is the sum of
// its own pods' start times.
func startFleets(b *testing.B, targets []fleetTarget, image string, n int, hostNet bool) []*fleet {
	ctx := context.Background()
	time.Sleep(2 * time.Second) // let the daemons settle (pulls, earlier pods)
	before := processSet()
	var fleets []*fleet
	removeAll := func() {
		for _, f := range fleets {
			f.remove()
		}
	}
	cpu0 := make([]float64, len(targets))
	for i, t := range targets {
		f := &fleet{rt: t.rt, daemon: t.daemon, marker: t.marker, before: before}
		f.d.pods = n
		f.d.daemonRss0 = float64(statusKiB(t.daemon, "VmRSS:"))
		cpu0[i] = f.cpu()
		fleets = append(fleets, f)
	}
	netMode := runtimeapi.NamespaceMode_POD
	if hostNet {
		netMode = runtimeapi.NamespaceMode_NODE
	}
	linux := &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode, Pid: runtimeapi.NamespaceMode_CONTAINER},
	}}
	stamp := time.Now().UnixNano()
	for i := range n {
		for _, f := range fleets {
			name := fmt.Sprintf("density-%d-%d", i, stamp)
			podCfg := &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
				Linux:    linux,
			}
			start := time.Now()
			run, err := f.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
			if err != nil {
				removeAll()
				b.Fatalf("RunPodSandbox %d: %v", i, err)
			}
			f.pods = append(f.pods, run.PodSandboxId)
			cr, err := f.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
				Image:    &runtimeapi.ImageSpec{Image: image},
				Command:  []string{"sleep", "3600"},
			}})
			if err != nil {
				removeAll()
				b.Fatalf("CreateContainer %d: %v", i, err)
			}
			if _, err := f.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				removeAll()
				b.Fatalf("StartContainer %d: %v", i, err)
			}
			f.d.start += time.Since(start)
			f.ctrs = append(f.ctrs, cr.ContainerId)
			if i+1 == 50 {
				f.d.start50 = f.d.start
			}
		}
	}
	for i, f := range fleets {
		f.d.cpuSeconds = f.cpu() - cpu0[i]
	}
	return fleets
}

// containerPIDs are the containers' own processes, from the verbose status.
func (f *fleet) containerPIDs(b *testing.B) map[int]bool {
	pids := map[int]bool{}
	for _, id := range f.ctrs {
		resp, err := f.rt.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
		if err != nil {
			b.Fatal(err)
		}
		var info struct{ Pid int }
		if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Pid == 0 {
			b.Fatalf("no pid in the verbose status of %s: %v", id, err)
		}
		pids[info.Pid] = true
	}
	return pids
}

// runtimeProcesses are the daemon and the processes it added for the pods
// (keepers; shims and pause), without the containers' own processes.
func (f *fleet) runtimeProcesses(containers map[int]bool) []process {
	procs := allProcesses()
	ids := append(append(append([]string(nil), f.pods...), f.ctrs...), f.marks...)
	if f.marker != "" {
		ids = append(ids, f.marker)
	}
	var out []process
	for _, pr := range procs {
		if pr.pid == f.daemon {
			out = append(out, pr)
			continue
		}
		if f.before[pr.key()] || pr.kernel || descendsFrom(procs, pr.pid, containers) {
			continue
		}
		if !descendsFrom(procs, pr.pid, map[int]bool{f.daemon: true}) && !namesAny(procs, pr.pid, ids) {
			continue
		}
		out = append(out, pr)
	}
	return out
}

// cpu is the CPU time, in seconds, of the daemon and its per-pod
// processes, each with its reaped children (CNI plugins, runc, runners).
// Containers are told apart by their PIDs only once they all run, so
// this counts them too: a sleep's CPU time is nil.
func (f *fleet) cpu() float64 {
	var ticks int
	for _, pr := range f.runtimeProcesses(nil) {
		ticks += cpuTicks(pr.pid)
	}
	return float64(ticks) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// cpuTicks is utime+stime+cutime+cstime of pid.
func cpuTicks(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0
	}
	var sum int
	for _, v := range f[11:15] {
		n, _ := strconv.Atoi(v)
		sum += n
	}
	return sum
}

// measure waits for the pods to settle and measures their memory.
func (f *fleet) measure(b *testing.B) density {
	time.Sleep(3 * time.Second) // as measure-density.sh's DENSITY_SETTLE_S
	d := f.d
	for _, pr := range f.runtimeProcesses(f.containerPIDs(b)) {
		if pr.pid == f.daemon {
			continue
		}
		d.perPodPss += float64(rollupKiB(pr.pid, "Pss:"))
		d.perPodRss += float64(rollupKiB(pr.pid, "Rss:"))
		d.perPodPssAnon += float64(rollupKiB(pr.pid, "Pss_Anon:"))
		d.processes++
	}
	d.perPodPss /= float64(len(f.pods))
	d.perPodPssAnon /= float64(len(f.pods))
	d.perPodRss /= float64(len(f.pods))
	d.daemonRssN = float64(statusKiB(f.daemon, "VmRSS:"))
	return d
}

// remove stops and removes the fleet's pods.
func (f *fleet) remove() {
	ctx := context.Background()
	for _, p := range f.pods {
		f.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p})
		f.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p})
	}
	f.pods, f.ctrs = nil, nil
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
