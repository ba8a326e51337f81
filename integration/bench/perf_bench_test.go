package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/bench/perfresult"
)

// suiteSizes are the sizes of one `make bench`. BENCH_QUICK=1 shrinks
// them to check the harness (minutes, on a loaded machine); its figures
// are not measurements.
type suiteSizes struct {
	critest       critestSizes // per round
	critestRounds int
	lifecycles    int // pod lifecycles per runtime, one at a time, alternating
	execs         int // ExecSync per runtime, alternating
	densityPods   int
	densityRounds int
	statsCalls    int           // ListContainerStats per runtime at densityPods pods
	steady        time.Duration // kubelet-like polling window (first density round)
}

func benchSizes() (suiteSizes, bool) {
	if os.Getenv("BENCH_QUICK") == "1" {
		return suiteSizes{critest: critestSizes{pods: 4, containers: 4, images: 2}, critestRounds: 1,
			lifecycles: 3, execs: 10, densityPods: 10, densityRounds: 1, statsCalls: 5, steady: 3 * time.Second}, true
	}
	return suiteSizes{critest: critestSizes{pods: 20, containers: 20, images: 10}, critestRounds: 2,
		lifecycles: 30, execs: 100, densityPods: 50, densityRounds: 2, statsCalls: 30, steady: 20 * time.Second}, false
}

// suiteRuntime is one runtime under test.
type suiteRuntime struct {
	key, name string
	anchor    bool
	version   string
	rt        runtimeapi.RuntimeServiceClient
	img       runtimeapi.ImageServiceClient
	sock      string
	daemon    int      // PID of the daemon
	marks     []string // named in the command lines of its per-pod processes (socket, private dir)
}

// rotated is rs starting at index k; reversed when flip (alternate rounds).
func rotated(rs []*suiteRuntime, k int, flip bool) []*suiteRuntime {
	out := append(slices.Clone(rs[k%len(rs):]), rs[:k%len(rs)]...)
	if flip {
		slices.Reverse(out)
	}
	return out
}

// BenchmarkPerformance is `make bench` (issue #21): peapod against every
// anchor in one run, on one loopback registry:
//   - peapod with the same CNI conflist as the anchors (bridge + host-local
//   - portmap from /usr/lib/cni: the headline rows) and peapod with its
//     built-in network (rows of its own);
//   - containerd 1.6.20 (Debian), containerd 2.4.2 and CRI-O 1.36.3 (built
//     from the Go module proxy by build-anchors.sh, cached by version).
//
// Every runtime has its own root, state, socket, bridge and subnet, and
// pulls its images itself (CRI PullImage). peapod's container records are
// synced as the anchors' are (PEAPOD_DURABLE_ROOTFS=1, docs/performance.md).
// The workloads, each alternating or rotating the runtimes so that all
// meet the same load of a shared machine:
//   - pod lifecycles one at a time (RunPodSandbox, CreateContainer +
//     StartContainer of `sleep 3600`, StopContainer, StopPodSandbox,
//     RemovePodSandbox), the runtimes taking turns sample by sample;
//   - ExecSync `true` into a running container, turns sample by sample;
//   - critest --benchmark in rounds, the runtimes' order rotated;
//   - density as ../shared/critest/measure-density.sh: pods started one
//     after another with crictl, one runtime at a time (order rotated by
//     round), the per-pod PSS of what the runtime added, then
//     ListContainerStats and kubelet-like polling at that density.
//
// It prints the tables and writes the run as JSON (PEAPOD_BENCH_JSON,
// default _output/bench/performance.json) for integration/bench/perfdoc,
// which writes docs/performance.md's results section from it.
func BenchmarkPerformance(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := os.Stat("/usr/lib/cni/portmap"); err != nil {
		b.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
	}
	sz, quick := benchSizes()
	began := time.Now()
	load0 := loadAvg()
	ensureAnchors(b)
	critest := critestBinary(b)
	if critest == "" {
		b.Fatal("critest is needed (make bench builds it)")
	}
	crictl := crictlBin()
	reg, image, pause := runtimeBenchRegistry(b)
	critestImages := pushCritestImages(b, reg)

	pid := os.Getpid()
	cni := func(prefix string, k int) string {
		br := prefix + strconv.Itoa(pid%100000)
		guardForward(b, br)
		return benchConflist(br, benchSubnet(b, pid+k), b.TempDir())
	}
	durable := []string{"PEAPOD_DURABLE_ROOTFS=1"}
	ppc := startPeapodEndpointEnv(b, reg, cni("ppc", 3), "1", durable)
	ppb := startPeapodEndpointEnv(b, reg, "", "2", durable)
	c16 := startContainerdWith(b, containerdBin, containerdConfig, reg, pause, cni("ppd", 13))
	c24 := startContainerdWith(b, containerd2Bin(), containerd2Config, reg, pause, cni("ppe", 23))
	crio := startCRIO(b, reg, pause, cni("ppo", 33))
	runtimes := []*suiteRuntime{
		{key: "peapod", name: "peapod (CNI)", rt: ppc.rt, img: ppc.img, sock: ppc.sock, daemon: ppc.pid, marks: []string{ppc.sock, ppc.dir}},
		{key: "peapod-builtin", name: "peapod built-in", rt: ppb.rt, img: ppb.img, sock: ppb.sock, daemon: ppb.pid, marks: []string{ppb.sock, ppb.dir}},
		{key: "containerd-1.6", name: "containerd 1.6", anchor: true, rt: c16.rt, img: c16.img, sock: c16.sock, daemon: c16.pid, marks: []string{c16.sock, c16.dir}},
		{key: "containerd-2.4", name: "containerd 2.4", anchor: true, rt: c24.rt, img: c24.img, sock: c24.sock, daemon: c24.pid, marks: []string{c24.sock, c24.dir}},
		{key: "crio", name: "CRI-O 1.36", anchor: true, rt: crio.rt, img: crio.img, sock: crio.sock, daemon: crio.pid, marks: []string{crio.sock, crio.dir}},
	}
	ctx := context.Background()
	for _, r := range runtimes {
		v, err := r.rt.Version(ctx, &runtimeapi.VersionRequest{})
		if err != nil {
			b.Fatalf("%s: Version: %v", r.name, err)
		}
		r.version = v.RuntimeName + " " + v.RuntimeVersion
		for _, ref := range []string{image, pause} {
			if _, err := r.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
				b.Fatalf("%s: pull %s: %v", r.name, ref, err)
			}
		}
	}

	res := newResults(runtimes)
	for i := 0; i < b.N; i++ {
		// Pod lifecycles, one at a time, the runtimes taking turns.
		lc := map[string][]lifecycle{}
		logDir := b.TempDir()
		for s := range sz.lifecycles {
			for _, r := range rotated(runtimes, s, false) {
				lc[r.key] = append(lc[r.key], podLifecycle(b, r, image, logDir, s))
			}
		}
		for _, r := range runtimes {
			l := lc[r.key]
			res.add(r.key, "RunPodSandbox", "ms", pick(l, func(x lifecycle) time.Duration { return x.run }))
			res.add(r.key, "CreateContainer + StartContainer", "ms", pick(l, func(x lifecycle) time.Duration { return x.create + x.start }))
			res.add(r.key, "StopContainer (timeout 0)", "ms", pick(l, func(x lifecycle) time.Duration { return x.stop }))
			res.add(r.key, "StopPodSandbox", "ms", pick(l, func(x lifecycle) time.Duration { return x.stopPod }))
			res.add(r.key, "pod + container from scratch (RunPodSandbox + Create + Start)", "ms", pick(l, func(x lifecycle) time.Duration { return x.run + x.create + x.start }))
			res.add(r.key, "RemovePodSandbox", "ms", pick(l, func(x lifecycle) time.Duration { return x.remove }))
		}

		// ExecSync into one running container per runtime, turns sample by sample.
		execs := sampleExecs(b, runtimes, image, logDir, sz.execs)
		for _, r := range runtimes {
			res.add(r.key, "ExecSync `true` (cgroup v1 host)", "ms", execs[r.key])
		}

		// critest --benchmark in rounds, the order rotated and reversed.
		for round := range sz.critestRounds {
			for _, r := range rotated(runtimes, round+2, round%2 == 1) {
				out := runCritestBenchmark(b, critest, r.sock, critestImages, sz.critest)
				for _, op := range critestOps {
					res.addCritest(r.key, op, out[op])
				}
			}
		}

		// Density, one runtime at a time (the others idle, no pods).
		for round := range sz.densityRounds {
			steady := time.Duration(0)
			if round == 0 {
				steady = sz.steady
			}
			for _, r := range rotated(runtimes, round+3, round%2 == 1) {
				d := crictlDensity(b, crictl, r, image, sz.densityPods, sz.statsCalls, steady)
				res.addDensity(r.key, sz.densityPods, d)
			}
		}
	}

	run := res.run(sz, quick)
	for _, f := range critestFailures {
		for _, r := range runtimes {
			f = strings.ReplaceAll(f, r.sock, r.name)
		}
		run.Notes = append(run.Notes, "critest --benchmark failed (its rows for that runtime hold what it wrote before): "+f)
	}
	run.Date = began.UTC().Format(time.RFC3339)
	run.WallS = time.Since(began).Seconds()
	run.LoadStart, run.LoadEnd = load0, loadAvg()
	run.Commit = gitDescribe()
	run.Command = benchCommand()
	run.Machine = machine()
	for i, r := range runtimes {
		run.Runtimes[i].Version = r.version
	}
	out := os.Getenv("PEAPOD_BENCH_JSON")
	if out == "" {
		out = "../../_output/bench/performance.json"
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := run.Write(out); err != nil {
		b.Fatalf("write %s: %v", out, err)
	}
	abs, _ := filepath.Abs(out)
	fmt.Printf("\n%s\nperformance suite: JSON in %s (go run ./integration/bench/perfdoc -json %s writes docs/performance.md)\n", run.Markdown(), abs, abs)
}

// lifecycle is the time of each step of one pod's life.
type lifecycle struct{ run, create, start, stop, stopPod, remove time.Duration }

func pick(l []lifecycle, f func(lifecycle) time.Duration) []time.Duration {
	out := make([]time.Duration, len(l))
	for i, x := range l {
		out[i] = f(x)
	}
	return out
}

// benchPod is the pod config of the bench's own pods and of the density:
// its own network namespace, IPC per pod, PID per container (kubelet's
// defaults), a log directory.
func benchPod(name, logDir string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
		LogDirectory: filepath.Join(logDir, name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

func sleepContainer(image string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
		// UserSpecifiedImage as the kubelet sets it: CRI-O refuses a
		// container without it (it checks the signature policy by it).
		Image:   &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: image},
		Command: []string{"sleep", "3600"},
		LogPath: "sleep.log", // as measure-density.sh (the kubelet makes sleep/ first for sleep/0.log)
		// The pod's namespace options again, as the kubelet gives them
		// (CRI-O reads the PID mode from here).
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

// podLifecycle runs one pod through its life and times each call.
func podLifecycle(b *testing.B, r *suiteRuntime, image, logDir string, i int) lifecycle {
	ctx := context.Background()
	var l lifecycle
	cfg := benchPod(fmt.Sprintf("life-%d-%d", i, time.Now().UnixNano()), logDir)
	t := time.Now()
	pod, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	l.run = time.Since(t)
	if err != nil {
		b.Fatalf("%s: RunPodSandbox: %v", r.name, err)
	}
	fail := func(what string, err error) {
		r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		b.Fatalf("%s: %s: %v", r.name, what, err)
	}
	t = time.Now()
	cr, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: cfg, Config: sleepContainer(image)})
	l.create = time.Since(t)
	if err != nil {
		fail("CreateContainer", err)
	}
	t = time.Now()
	_, err = r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
	l.start = time.Since(t)
	if err != nil {
		fail("StartContainer", err)
	}
	t = time.Now()
	_, err = r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 0})
	l.stop = time.Since(t)
	if err != nil {
		fail("StopContainer", err)
	}
	t = time.Now()
	_, err = r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	l.stopPod = time.Since(t)
	if err != nil {
		fail("StopPodSandbox", err)
	}
	t = time.Now()
	_, err = r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	l.remove = time.Since(t)
	if err != nil {
		b.Fatalf("%s: RemovePodSandbox: %v", r.name, err)
	}
	return l
}

// sampleExecs starts one pod with a `sleep 3600` container per runtime and
// runs ExecSync `true` in it n times per runtime, the runtimes taking turns
// (the order rotated each sample).
func sampleExecs(b *testing.B, runtimes []*suiteRuntime, image, logDir string, n int) map[string][]time.Duration {
	ctx := context.Background()
	ctrs := map[string]string{}
	for _, r := range runtimes {
		cfg := benchPod(fmt.Sprintf("exec-%d", time.Now().UnixNano()), logDir)
		pod, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			b.Fatalf("%s: RunPodSandbox: %v", r.name, err)
		}
		defer func() {
			r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
			r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		}()
		cr, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: cfg, Config: sleepContainer(image)})
		if err == nil {
			_, err = r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
		}
		if err != nil {
			b.Fatalf("%s: exec container: %v", r.name, err)
		}
		ctrs[r.key] = cr.ContainerId
	}
	out := map[string][]time.Duration{}
	for s := range n + 3 {
		for _, r := range rotated(runtimes, s, false) {
			t := time.Now()
			resp, err := r.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrs[r.key], Cmd: []string{"true"}, Timeout: 10})
			d := time.Since(t)
			if err != nil || resp.ExitCode != 0 {
				b.Fatalf("%s: ExecSync true: %v %v", r.name, err, resp)
			}
			if s >= 3 { // the first three warm the path up
				out[r.key] = append(out[r.key], d)
			}
		}
	}
	return out
}

// results collects the rows of the run.
type results struct {
	runtimes []*suiteRuntime
	rows     []*perfresult.Row
	byName   map[string]*perfresult.Row
}

func newResults(rs []*suiteRuntime) *results {
	return &results{runtimes: rs, byName: map[string]*perfresult.Row{}}
}

func (res *results) row(section, name, unit string, goal *perfresult.Goal) *perfresult.Row {
	k := section + "\x00" + name
	if r := res.byName[k]; r != nil {
		return r
	}
	r := &perfresult.Row{Section: section, Name: name, Unit: unit, Goal: goal, Cells: map[string]perfresult.Cell{}}
	res.byName[k] = r
	res.rows = append(res.rows, r)
	return r
}

// Goals of issue #21 (p50 ratio to the best anchor of the row, unless named).
var goals = map[string][2]*perfresult.Goal{ // [CNI row, built-in row]
	"RunPodSandbox":                    {{Ratio: 0.25, Text: "≤ 0.25× best anchor"}, {Ratio: 0.15, Text: "≤ 0.15× best anchor"}},
	"CreateContainer + StartContainer": {{Ratio: 0.33, Text: "≤ 0.33× best anchor"}, {Ratio: 0.33, Text: "≤ 0.33× best anchor"}},
	"StopContainer (timeout 0)":        {{Ratio: 0.33, Text: "≤ 0.33× best anchor"}, {Ratio: 0.33, Text: "≤ 0.33× best anchor"}},
	"StopPodSandbox":                   {{Ratio: 0.33, Text: "≤ 0.33× best anchor"}, {Ratio: 0.33, Text: "≤ 0.33× best anchor"}},
	"pod + container from scratch (RunPodSandbox + Create + Start)": {{Ratio: 0.25, Text: "≤ 0.25× best anchor"}, {Ratio: 0.25, Text: "≤ 0.25× best anchor"}},
	"ExecSync `true` (cgroup v1 host)":                              {{Ratio: 0.33, Text: "≤ 0.33× best anchor"}, {Ratio: 0.33, Text: "≤ 0.33× best anchor"}},
}

// add records latency samples of runtime key: CNI rows for the CNI
// runtimes, built-in rows for peapod built-in; the anchors' samples go in
// both, so that the built-in rows have their reference.
func (res *results) add(key, name, unit string, samples []time.Duration) {
	c := cellOf(samples)
	g := goals[name]
	if key != "peapod-builtin" {
		res.row("headline", name, unit, withSubject(g[0], "peapod")).Cells[key] = c
	}
	if key == "peapod-builtin" || res.anchor(key) {
		res.row("builtin", name, unit, withSubject(g[1], "peapod-builtin")).Cells[key] = c
	}
}

func withSubject(g *perfresult.Goal, subj string) *perfresult.Goal {
	if g == nil {
		return nil
	}
	c := *g
	c.Subject = subj
	return &c
}

func (res *results) anchor(key string) bool {
	for _, r := range res.runtimes {
		if r.key == key {
			return r.anchor
		}
	}
	return false
}

// addCritest adds critest's samples of one operation (rounds accumulate).
func (res *results) addCritest(key, op string, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	row := res.row("critest", "critest "+op, "ms", nil)
	all := append(critestSamples[key+op], samples...)
	critestSamples[key+op] = all
	row.Cells[key] = cellOf(all)
}

// critestSamples keeps each runtime's samples of an operation across rounds.
var critestSamples = map[string][]time.Duration{}

// addDensity adds one density round (rounds give n > 1: p50 over rounds).
func (res *results) addDensity(key string, pods int, d crictlDensityResult) {
	podsRow := fmt.Sprintf("%d pods one after another (crictl, as measure-density.sh)", pods)
	pssRow := fmt.Sprintf("per-pod PSS at %d pods (measure-density.sh rule)", pods)
	stats := fmt.Sprintf("ListContainerStats, %d running containers", pods)
	vals := []struct {
		name, unit, section string
		v                   float64
		samples             []time.Duration
		goal                [2]*perfresult.Goal
	}{
		{name: podsRow, unit: "s", v: d.start.Seconds(), goal: [2]*perfresult.Goal{{Ratio: 0.4, Ref: "crio", Text: "≤ 0.4× CRI-O"}, {Ratio: 0.4, Ref: "crio", Text: "≤ 0.4× CRI-O"}}},
		{name: pssRow, unit: "KiB", v: d.perPodPss, goal: [2]*perfresult.Goal{{Max: 120, Text: "≤ 120 KiB"}, {Max: 120, Text: "≤ 120 KiB"}}},
		{name: stats, unit: "ms", samples: d.stats, goal: [2]*perfresult.Goal{{Ratio: 0.3, Text: "≤ 0.3× best anchor (issue 4)"}, {Ratio: 0.3, Text: "≤ 0.3× best anchor (issue 4)"}}},
		{name: fmt.Sprintf("per-pod RSS at %d pods", pods), unit: "KiB", section: "extra", v: d.perPodRss},
		{name: fmt.Sprintf("daemon RSS at %d pods", pods), unit: "MiB", section: "extra", v: d.daemonRssN / 1024},
		{name: fmt.Sprintf("runtime CPU to start %d pods", pods), unit: "s", section: "extra", v: d.cpuSeconds},
		{name: fmt.Sprintf("runtime CPU, %d pods polled 1/s as the kubelet", pods), unit: "s/min", section: "extra", v: d.steadyCPU},
	}
	for _, x := range vals {
		if x.samples == nil && x.v == 0 && x.section == "extra" {
			continue // steady CPU is measured in the first round only
		}
		var add func(row *perfresult.Row)
		if x.samples != nil {
			c := cellOf(x.samples)
			add = func(row *perfresult.Row) { row.Cells[key] = c }
		} else {
			add = func(row *perfresult.Row) { row.Cells[key] = appendValue(row, key, x.v) }
		}
		if x.section == "extra" {
			add(res.row("extra", x.name, x.unit, nil))
			continue
		}
		if key != "peapod-builtin" {
			add(res.row("headline", x.name, x.unit, withSubject(x.goal[0], "peapod")))
		}
		if key == "peapod-builtin" || res.anchor(key) {
			add(res.row("builtin", x.name, x.unit, withSubject(x.goal[1], "peapod-builtin")))
		}
	}
}

// densityValues keeps single values across rounds, by row and runtime.
var densityValues = map[string][]float64{}

// appendValue adds v to the row's values of key: one round is that value,
// more are their median (the lower one of two) and their maximum as "p99".
func appendValue(row *perfresult.Row, key string, v float64) perfresult.Cell {
	k := row.Section + row.Name + key
	densityValues[k] = append(densityValues[k], v)
	vs := slices.Clone(densityValues[k])
	slices.Sort(vs)
	c := perfresult.Cell{N: len(vs), P50: vs[(len(vs)-1)/2]}
	if len(vs) > 1 {
		c.P99 = vs[len(vs)-1]
	}
	return c
}

// cellOf is p50/p99 in ms by the nearest-rank rule of critest's
// run-benchmark.sh (sorted[(n-1)*p]).
func cellOf(samples []time.Duration) perfresult.Cell {
	if len(samples) == 0 {
		return perfresult.Cell{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	pct := func(p float64) float64 { return float64(s[int(float64(len(s)-1)*p)]) / float64(time.Millisecond) }
	return perfresult.Cell{N: len(s), P50: pct(0.5), P99: pct(0.99)}
}

func (res *results) run(sz suiteSizes, quick bool) *perfresult.Run {
	run := &perfresult.Run{Quick: quick}
	for _, r := range res.runtimes {
		run.Runtimes = append(run.Runtimes, perfresult.Runtime{Key: r.key, Name: r.name, Anchor: r.anchor})
	}
	for _, r := range res.rows {
		run.Rows = append(run.Rows, *r)
	}
	run.Notes = []string{
		fmt.Sprintf("Sizes: %d pod lifecycles and %d ExecSync per runtime, the runtimes taking turns sample by sample; critest --benchmark %d round(s) of %d pods, %d containers (2 at a time) and %d pulls, the order rotated and reversed by round; density %d pods, %d round(s), one runtime at a time, the order rotated by round (two rounds: p50 is the lower, \"p99\" the higher); %d ListContainerStats calls at that density; polling window %s.",
			sz.lifecycles, sz.execs, sz.critestRounds, sz.critest.pods, sz.critest.containers, sz.critest.images, sz.densityPods, sz.densityRounds, sz.statsCalls, sz.steady),
		"peapod runs with PEAPOD_DURABLE_ROOTFS=1: its records of containers' writable layers (storage/peapod-rwlayers; containers/storage's files for user-namespaced ones) are synced, and the layers mounted without overlay's volatile option, as the anchors sync their metadata.",
	}
	return run
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

func gitDescribe() string {
	out, err := exec.Command("git", "-C", "../..", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func benchCommand() string {
	if c := os.Getenv("PEAPOD_BENCH_COMMAND"); c != "" {
		return c
	}
	return strings.Join(os.Args, " ")
}

func machine() string {
	model := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cg := "cgroup v1 (hybrid)"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg = "cgroup v2"
	}
	return fmt.Sprintf("Machine: %d CPUs (%s), Linux %s, %s.", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), cg)
}

// steadyCPU polls the fleet's runtime as the kubelet does
// (ListPodSandbox, ListContainers, ListContainerStats once a second) for
// window and returns its CPU seconds per minute meanwhile.
func steadyCPU(b *testing.B, f *fleet, window time.Duration) float64 {
	ctx := context.Background()
	procs := f.runtimeProcesses(f.containerPIDs(b))
	ticks := func() int {
		var n int
		for _, pr := range procs {
			n += cpuTicks(pr.pid)
		}
		return n
	}
	c0 := ticks()
	t0 := time.Now()
	for time.Since(t0) < window {
		next := time.Now().Add(time.Second)
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
		time.Sleep(time.Until(next))
	}
	return float64(ticks()-c0) / clockTicks / time.Since(t0).Minutes()
}

// critestBinary is the critest to run: $CRITEST, else the one `make
// critest` builds (bin/critest-tools), else one built here from the tools
// module tools/critest. "" (and a note) when there is none.
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
			fmt.Printf("critest: build from tools/critest failed: %v\n%s\n", err, msg)
		}
	}
	fmt.Println("critest: none found (set CRITEST or run make critest)")
	return ""
}
