package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// BenchmarkLifecycleAB times the steps of one pod's life as critest's
// benchmark and the kubelet take them — RunPodSandbox, CreateContainer +
// StartContainer, StopContainer, StopPodSandbox, RemovePodSandbox — on
// peapod built from this tree and, when PEAPOD_BENCH_AB_BASE names a
// directory holding another build (peapod and peapod-runner), on that one
// too, sample by sample in turns, so that both meet the same load of a
// shared machine. Only the ratios of one run mean something there.
//
//	go build -tags "$(cat build-tags.txt)" -o /tmp/base/ ./cmd/peapod ./cmd/peapod-runner   # at the base commit
//	go test -tags "$(cat build-tags.txt)" -c -o /tmp/bench.test ./integration/bench/
//	cd integration/bench && PEAPOD_BENCH_AB_BASE=/tmp/base PEAPOD_BENCH_AB_SAMPLES=60 \
//	  /tmp/bench.test -test.run '^$' -test.bench BenchmarkLifecycleAB -test.benchtime 1x
//
// PEAPOD_BENCH_AB_CNI=1 gives both daemons the CNI bridge plugin instead of
// the built-in network. PEAPOD_BENCH_AB_PODS=N then starts N pods on each
// (in turns) and prints the per-pod memory measure-density.sh counts
// (PEAPOD_BENCH_AB_HOLD=90s keeps them that long, to look at them;
// without PEAPOD_BENCH_AB_PODS it keeps the idle daemons, for
// ../shared/critest/measure-density.sh, whose sockets it prints).
// PEAPOD_BENCH_AB_LOGS=DIR keeps the daemons' logs there, at debug level,
// with the daemon's phase timings of StartContainer and StopPodSandbox
// (daemon-0.log: this tree, daemon-1.log: the base).
func BenchmarkLifecycleAB(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	samples, _ := strconv.Atoi(cmp.Or(os.Getenv("PEAPOD_BENCH_AB_SAMPLES"), "30"))
	reg, image, _ := runtimeBenchRegistry(b)
	conflist := func(x int) string { return "" }
	if os.Getenv("PEAPOD_BENCH_AB_CNI") == "1" {
		if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
			b.Skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
		}
		conflist = func(x int) string {
			br := "ppab" + strconv.Itoa((os.Getpid()+x)%100000)
			guardForward(b, br)
			return benchConflist(br, benchSubnet(b, os.Getpid()+x+11), b.TempDir())
		}
	}
	type side struct {
		name string
		d    *testenv.Daemon
		took map[string][]time.Duration
	}
	binDir, err := os.MkdirTemp("", "peapod-bench-bin-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(binDir) })
	if err := testenv.BuildPeapod("../..", binDir); err != nil {
		b.Fatal(err)
	}
	sides := []*side{{name: "this tree", d: startPeapodBinary(b, filepath.Join(binDir, "peapod"), reg, conflist(0), "0")}}
	if base := os.Getenv("PEAPOD_BENCH_AB_BASE"); base != "" {
		sides = append(sides, &side{name: "base " + base, d: startPeapodBinary(b, filepath.Join(base, "peapod"), reg, conflist(1), "1")})
	}
	for _, s := range sides {
		if _, err := s.d.Img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			b.Fatal(err)
		}
	}
	logDir := b.TempDir()
	load0 := loadAvg()
	for i := range samples + 2 {
		for j := range sides {
			// Alternate which side goes first as well.
			s := sides[(i+j)%len(sides)]
			took := lifecycleOnce(b, s.d.RT, image, filepath.Join(logDir, strconv.Itoa(i)+"-"+strconv.Itoa(j)))
			if i < 2 {
				continue // warm-up
			}
			if s.took == nil {
				s.took = map[string][]time.Duration{}
			}
			for k, v := range took {
				s.took[k] = append(s.took[k], v)
			}
		}
	}
	fmt.Printf("\nlifecycle A/B, %d samples each, in turns; load %s at start, %s at end\n", samples, load0, loadAvg())
	fmt.Printf("%-36s %-22s %8s %8s %8s\n", "step (ms)", "daemon", "p50", "p90", "p99")
	for _, step := range lifecycleSteps {
		var p50s []float64
		for _, s := range sides {
			d := slices.Clone(s.took[step])
			slices.Sort(d)
			l := percentiles(d)
			p50s = append(p50s, ms(l.p50))
			fmt.Printf("%-36s %-22s %8.2f %8.2f %8.2f\n", step, s.name, ms(l.p50), ms(d[len(d)*9/10]), ms(l.p99))
		}
		if len(p50s) == 2 && p50s[1] > 0 {
			fmt.Printf("%-36s %-22s %8.2f\n", step, "p50 this/base", p50s[0]/p50s[1])
		}
	}
	// Per-pod memory as measure-density.sh counts it: the processes that
	// appeared with the pods, less the containers' and the daemon.
	if pods, _ := strconv.Atoi(os.Getenv("PEAPOD_BENCH_AB_PODS")); pods > 0 {
		var targets []fleetTarget
		for _, s := range sides {
			targets = append(targets, fleetTarget{rt: s.d.RT, daemon: s.d.Cmd.Process.Pid})
		}
		fleets := startFleets(b, targets, image, pods, false)
		for i, f := range fleets {
			d := f.measure(b)
			fmt.Printf("%-36s %-22s %8.1f KiB PSS (%5.1f Pss_Anon), %8.1f KiB RSS, %d processes\n", fmt.Sprintf("per-pod memory, %d pods", pods), sides[i].name, d.perPodPss, d.perPodPssAnon, d.perPodRss, d.processes)
		}
		if hold, _ := time.ParseDuration(os.Getenv("PEAPOD_BENCH_AB_HOLD")); hold > 0 {
			fmt.Printf("holding the pods for %s\n", hold)
			time.Sleep(hold)
		}
		for _, f := range fleets {
			f.remove()
		}
	} else if hold, _ := time.ParseDuration(os.Getenv("PEAPOD_BENCH_AB_HOLD")); hold > 0 {
		// Idle daemons for ../shared/critest/measure-density.sh.
		for _, s := range sides {
			fmt.Printf("holding %s for %s: unix://%s, image %s\n", s.name, hold, s.d.Socket, image)
		}
		time.Sleep(hold)
	}
}

var lifecycleSteps = []string{"RunPodSandbox", "CreateContainer", "StartContainer", "CreateContainer+StartContainer", "StopContainer", "StopPodSandbox", "RemovePodSandbox"}

// startPeapodBinary starts the peapod binary bin (its runner beside it)
// with the bench's settings; instance sets its bridge, subnet and cgroup
// parent apart from the other side's.
func startPeapodBinary(b *testing.B, bin, reg, conflist, instance string) *testenv.Daemon {
	suffix := strconv.Itoa(os.Getpid()%100000) + instance
	third := (os.Getpid()%200+20+1+int(instance[0]-'0'))%200 + 20
	network := "builtin"
	if conflist != "" {
		network = "cni"
	}
	var logPath, logLevel string
	if dir := os.Getenv("PEAPOD_BENCH_AB_LOGS"); dir != "" {
		// Kept after the run, at debug level: the daemon's phase timings
		// ("start container phases", "stop pod phases").
		logPath, logLevel = filepath.Join(dir, "daemon-"+instance+".log"), "debug"
	}
	d := testenv.NewDaemon(b, testenv.DaemonOptions{
		LogPath:      logPath,
		LogLevel:     logLevel,
		Binary:       bin,
		Name:         "peapod-bench-ab",
		CgroupParent: "/peapod-bench-" + suffix,
		Bridge:       "ppb" + suffix,
		PodCIDR:      "10.198." + strconv.Itoa(third) + ".0/24",
		Network:      network,
		Registries:   testenv.MirrorRegistries(reg),
		CNIConflist:  conflist,
		KillWithTest: true,
		QuietCleanup: true,
	})
	d.Start()
	return d
}

// lifecycleOnce runs one pod through its life with a `sleep 3600`
// container (own network namespace, kubelet's namespace defaults, a CRI
// log) and returns the time of each step.
func lifecycleOnce(b *testing.B, rt runtimeapi.RuntimeServiceClient, image, logDir string) map[string]time.Duration {
	ctx := context.Background()
	name := "ab-" + strings.ReplaceAll(filepath.Base(logDir), "/", "-") + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	took := map[string]time.Duration{}
	step := func(name string, f func() error) {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		took[name] = time.Since(t0)
	}
	var pod, ctr string
	step("RunPodSandbox", func() error {
		r, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err == nil {
			pod = r.PodSandboxId
		}
		return err
	})
	step("CreateContainer", func() error {
		r, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: cfg, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  []string{"sleep", "3600"},
			LogPath:  "sleep/0.log",
		}})
		if err == nil {
			ctr = r.ContainerId
		}
		return err
	})
	step("StartContainer", func() error {
		_, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr})
		return err
	})
	took["CreateContainer+StartContainer"] = took["CreateContainer"] + took["StartContainer"]
	step("StopContainer", func() error {
		_, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr, Timeout: 0})
		return err
	})
	step("StopPodSandbox", func() error {
		_, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
		return err
	})
	step("RemovePodSandbox", func() error {
		_, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
		return err
	})
	return took
}
