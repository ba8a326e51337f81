package integration

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestGCDefaults: a real daemon runs its garbage collector with peapod's
// default (cmd/peapod/gc.go: GOGC 50, no memory limit) and
// leaves it to the operator when GOGC or GOMEMLIMIT is set, as its own
// metrics (go_gc_gogc_percent, go_gc_gomemlimit_bytes) report it.
func TestGCDefaults(t *testing.T) {
	regAddr, _ := testImage(t)
	d := &daemon{testenv.NewDaemon(t, daemonOptions(t, regAddr))}
	for _, tc := range []struct {
		env           []string
		gogc, limitMB float64
	}{
		{nil, 50, math.MaxInt64 / (1 << 20)},
		{[]string{"GOGC=200"}, 200, math.MaxInt64 / (1 << 20)},
		{[]string{"GOMEMLIMIT=1GiB"}, 100, 1024},
	} {
		addr := freeTCPAddr(t)
		d.Env = tc.env
		d.Args = []string{"--metrics-address", addr}
		d.Start()
		fams := scrape(t, addr)
		d.Stop()
		gogc, limit := gaugeValue(t, fams, "go_gc_gogc_percent"), gaugeValue(t, fams, "go_gc_gomemlimit_bytes")/(1<<20)
		if gogc != tc.gogc || math.Abs(limit-tc.limitMB) > 1e-6*tc.limitMB {
			t.Errorf("environment %q: GOGC %v, GOMEMLIMIT %v MiB; want %v, %v MiB", tc.env, gogc, limit, tc.gogc, tc.limitMB)
		}
	}
}

// gaugeValue is the value of gauge name, which must be there.
func gaugeValue(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	if f := fams[name]; f != nil && len(f.Metric) == 1 && f.Metric[0].Gauge != nil {
		return f.Metric[0].Gauge.GetValue()
	}
	t.Fatalf("no gauge %s among the daemon's metrics", name)
	return 0
}

// TestGoroutinesPerPod: a pod of one running container costs the daemon
// one goroutine: its container's exit watcher, waiting on its keeper's
// reply. The container's stop channel needs no second goroutine (the
// watcher waits on the container's context), and the pod's keeper and
// namespace holder are watched by sandbox/proc's one exit watcher (one
// epoll of all pidfds), not by a parked goroutine each (the keeper's
// reaper, the holder's pidfd watch). Each goroutine's stack is kilobytes
// of the daemon's memory per pod (at 500 pods, 1,516 goroutines held 6.7
// MB of stacks). Counted in the daemon's goroutine profile: by the stacks
// that run the watchers, and all of them per pod. Half the pods share a
// PID namespace (NamespaceMode_POD: they have a holder), half not.
func TestGoroutinesPerPod(t *testing.T) {
	const pods = 4
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	addr := freeTCPAddr(t)
	d.Env = []string{"PEAPOD_PPROF=" + addr}
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	// A first pod starts what every pod shares (the exit watcher, the
	// network's, the keepers' connections' machinery); the count per pod
	// is taken from there.
	startPod := func(i int) {
		cfg := podConfig(fmt.Sprintf("goroutines-%d", i), t.TempDir())
		if i%2 == 1 { // as the kubelet asks by default; unset is POD
			cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
		}
		pod := runPod(t, d, cfg).PodSandboxId
		startContainer(t, d, pod, cfg, containerConfig("sleep", image, "sleep", "3600"))
	}
	startPod(0)
	base := settledTotal(t, addr)
	for i := 1; i <= pods; i++ {
		startPod(i)
	}
	const watcher = "sandbox.(*Runtime).watchExit"
	const procWait = "peapod/sandbox/proc."
	// The watchers start with the containers; a few samples, in case one
	// was caught starting.
	var n, waits int
	profile := ""
	for range 5 {
		profile = goroutineProfile(t, addr)
		n, waits = countGoroutines(profile, watcher), countGoroutines(profile, procWait)
		if n == pods+1 && waits <= 1 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	total := settledTotal(t, addr)
	perPod := float64(total-base) / pods
	t.Logf("%d goroutines run %s for %d running containers; %d wait in %s; %.2f goroutines a pod (%d → %d)", n, watcher, pods+1, waits, procWait, perPod, base, total)
	if n != pods+1 {
		t.Errorf("%d goroutines run %s for %d running containers, want %d:\n%s", n, watcher, pods+1, pods+1, profile)
	}
	if waits > 1 {
		t.Errorf("%d goroutines wait in %s for %d pods' keepers and holders, want at most 1 (the exit watcher):\n%s", waits, procWait, pods+1, profile)
	}
	// One: the container's exit watcher (2.5 before the one exit watcher:
	// with its keeper's reaper and half of them a holder's watch).
	if perPod > 1.25 {
		t.Errorf("%.2f goroutines a pod of one running container (%d → %d for %d pods), want 1:\n%s", perPod, base, total, pods, profile)
	}
}

// settledTotal is the daemon's goroutine count, the lowest of a few
// samples: a goroutine of a call just answered may still be ending.
func settledTotal(t *testing.T, addr string) int {
	t.Helper()
	low := -1
	for range 5 {
		var n int
		if _, err := fmt.Sscanf(goroutineProfile(t, addr), "goroutine profile: total %d", &n); err != nil {
			t.Fatalf("goroutine profile: %v", err)
		}
		if low < 0 || n < low {
			low = n
		}
		time.Sleep(100 * time.Millisecond)
	}
	return low
}

func goroutineProfile(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// countGoroutines counts the goroutines of a debug=1 goroutine profile
// ("N @ pc...", then its frames) whose stack has a frame containing fn.
func countGoroutines(profile, fn string) int {
	total := 0
	_, profile, _ = strings.Cut(profile, "\n") // "goroutine profile: total N"
	for _, group := range strings.Split(profile, "\n\n") {
		var n int
		if _, err := fmt.Sscanf(group, "%d @", &n); err == nil && strings.Contains(group, fn) {
			total += n
		}
	}
	return total
}

// TestRetainedHeapPerContainer: a running container keeps no libcontainer
// handle in the daemon. The handle holds the container's whole config
// (mounts, devices, the seccomp profile's syscall names): ~10 KiB of
// retained heap per container (1.85 MB of 7.3 MB between 20 and 200 pods
// in the scale bench's heap profiles), for calls (a signal, an update, the
// first stats read) that load the state when they need it. Measured in
// the daemon's heap profile, every allocation sampled, after a GC: the
// bytes still held that libcontainer.Load allocated.
func TestRetainedHeapPerContainer(t *testing.T) {
	const ctrs = 4
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	addr := freeTCPAddr(t)
	d.Env = []string{"PEAPOD_PPROF=" + addr, "GODEBUG=memprofilerate=1"}
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range ctrs {
		cfg := podConfig(fmt.Sprintf("heap-%d", i), t.TempDir())
		pod := runPod(t, d, cfg).PodSandboxId
		ids = append(ids, startContainer(t, d, pod, cfg, containerConfig("sleep", image, "sleep", "3600")))
	}
	// Loaded at the start; the JSON decoder's cache of the state's types
	// is built once for the process.
	const loader = "libcontainer.Load"
	profile := heapProfile(t, addr)
	held := retainedBy(profile, []string{loader, "sandbox.(*Runtime).loadRuntimeHandle"}, []string{"encoding/json.cachedTypeFields"})
	t.Logf("%d bytes allocated by %s still held with %d running containers (%v)", held, loader, ctrs, ids)
	if held > ctrs*1024 {
		t.Fatalf("%d bytes allocated by %s still held with %d running containers, want under 1 KiB each:\n%s", held, loader, ctrs, profile)
	}
}

// heapProfile is the daemon's heap profile in the legacy text form, taken
// after a garbage collection.
func heapProfile(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// retainedBy sums the in-use bytes of the records ("objects: bytes
// [allocated objects: bytes] @ pc...", then "#" frames) of a text heap
// profile whose stack has a frame containing each of fns and none
// containing any of except.
func retainedBy(profile string, fns, except []string) int64 {
	var total int64
	for _, rec := range strings.Split(profile, "\n\n") {
		// A record's first line may follow the profile's header line.
		for head, frames, ok := strings.Cut(rec, "\n"); ok; head, frames, ok = strings.Cut(frames, "\n") {
			var objects, inuse int64
			if _, err := fmt.Sscanf(head, "%d: %d [", &objects, &inuse); err != nil {
				continue
			}
			has := func(fn string) bool { return strings.Contains(frames, fn) }
			if !slices.ContainsFunc(except, has) && !slices.ContainsFunc(fns, func(fn string) bool { return !has(fn) }) {
				total += inuse
			}
			break
		}
	}
	return total
}
