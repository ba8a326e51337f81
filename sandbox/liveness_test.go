package sandbox

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/proc"
)

// eventRecorder keeps the events published.
type eventRecorder struct {
	mu     sync.Mutex
	events []Event
}

func (e *eventRecorder) Publish(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

func (e *eventRecorder) stopped(podID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev.Type == EventStopped && ev.Container == nil && ev.Pod.ID == podID {
			n++
		}
	}
	return n
}

func testRuntime(ev Events) *Runtime {
	return &Runtime{log: slog.New(slog.DiscardHandler), opts: Options{Events: ev}}
}

var sharedPIDConfig = &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
	NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}}

// recoveredPod is the pod of a keeper (and holder) this daemon did not
// start: no reaper, its liveness comes from pidfd watches only.
func recoveredPod(t *testing.T, id string, keeper, holder int) *pod {
	t.Helper()
	ks, err := proc.StartTime(keeper)
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{Pod: Pod{ID: id, Config: sharedPIDConfig, State: PodReady, PausePID: keeper, PauseStart: ks}}
	if holder > 0 {
		hs, err := proc.StartTime(holder)
		if err != nil {
			t.Fatal(err)
		}
		p.PIDHolder, p.HolderStart = holder, hs
	}
	return p
}

func refreshed(p *pod) (PodState, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh()
	return p.State, p.NotReadyReason
}

// waitNotReady refreshes until the pod is not ready, as a list would.
func waitNotReady(t *testing.T, p *pod) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, why := refreshed(p); st != PodReady {
			return why
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("pod still ready 10 s after its process exited")
	return ""
}

// A killed holder makes the watched pod NotReady with the holder's
// reason and one stopped event, however often it is refreshed.
func TestLivenessHolderExit(t *testing.T) {
	keeper, holder := startTestPause(t)
	ev := &eventRecorder{}
	r := testRuntime(ev)
	p := recoveredPod(t, "holder-exit", keeper.Process.Pid, holder)
	r.watchPod(p)
	if st, why := refreshed(p); st != PodReady {
		t.Fatalf("watched pod not ready: %s", why)
	}
	if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	why := waitNotReady(t, p)
	if want := "the pod's PID namespace holder exited"; why != want {
		t.Errorf("reason %q, want %q", why, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ev.stopped(p.ID) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for range 10 {
		refreshed(p)
	}
	if n := ev.stopped(p.ID); n != 1 {
		t.Errorf("%d stopped events for the holder's exit, want 1", n)
	}
}

// A killed keeper (a recovered pod's: not this process's child to reap)
// makes the pod NotReady with the pause's reason, also though the
// holder dies with it and its exit may be seen first; no holder event.
func TestLivenessKeeperExit(t *testing.T) {
	keeper, holder := startTestPause(t)
	ev := &eventRecorder{}
	r := testRuntime(ev)
	p := recoveredPod(t, "keeper-exit", keeper.Process.Pid, holder)
	r.watchPod(p)
	if err := keeper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if why := waitNotReady(t, p); why != pauseGoneReason {
		t.Errorf("reason %q, want %q", why, pauseGoneReason)
	}
	time.Sleep(100 * time.Millisecond) // the holder's watch, if it fires
	if n := ev.stopped(p.ID); n != 0 {
		t.Errorf("%d holder events for a pod whose pause exited", n)
	}
}

// A process gone before its watch is registered (the pod recovered after
// it died, or it died between start and watch): the pod is NotReady at
// the first refresh, with the same reasons.
func TestLivenessDiedBeforeWatch(t *testing.T) {
	dead := exec.Command("sleep", "30")
	if err := dead.Start(); err != nil {
		t.Fatal(err)
	}
	deadStart, err := proc.StartTime(dead.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dead.Process.Kill()
	dead.Wait()
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })

	r := testRuntime(nil)
	p := recoveredPod(t, "keeper-dead", live.Process.Pid, 0)
	p.PausePID, p.PauseStart = dead.Process.Pid, deadStart
	r.watchPod(p)
	if st, why := refreshed(p); st != PodNotReady || why != pauseGoneReason {
		t.Errorf("keeper dead before the watch: %s %q, want NotReady %q", st, why, pauseGoneReason)
	}

	p = recoveredPod(t, "holder-dead", live.Process.Pid, 0)
	p.PIDHolder, p.HolderStart = dead.Process.Pid, deadStart
	r.watchPod(p)
	if st, why := refreshed(p); st != PodNotReady || !strings.Contains(why, "PID namespace holder exited") {
		t.Errorf("holder dead before the watch: %s %q, want NotReady for the holder", st, why)
	}
}

// A pod this daemon started: the keeper's reaper closing pauseExited is
// what refresh reads; no watch of its own is added.
func TestLivenessStartedKeeper(t *testing.T) {
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	exited := make(chan struct{})
	p := recoveredPod(t, "started", live.Process.Pid, 0)
	p.pauseExited = exited
	testRuntime(nil).watchPod(p)
	if st, why := refreshed(p); st != PodReady {
		t.Fatalf("started pod not ready: %s", why)
	}
	close(exited)
	if st, why := refreshed(p); st != PodNotReady || why != pauseGoneReason {
		t.Errorf("after the reaper: %s %q, want NotReady %q", st, why, pauseGoneReason)
	}
}

// refresh reads memory only: a ready pod whose processes no watch saw
// exit stays ready (here: no watch at all), and a pod that was stopped
// before its keeper's exit was seen keeps its state and (empty) reason.
func TestLivenessRefreshReadsNoProc(t *testing.T) {
	p := &pod{Pod: Pod{ID: "unwatched", State: PodReady, PausePID: 1 << 30, PauseStart: 1}}
	if st, why := refreshed(p); st != PodReady {
		t.Errorf("refresh read /proc: %s %q", st, why)
	}
	p = &pod{Pod: Pod{ID: "stopped", State: PodNotReady}}
	p.keeperGone.Store(true)
	if st, why := refreshed(p); st != PodNotReady || why != "" {
		t.Errorf("stopped pod after its keeper's exit: %s %q, want NotReady without a reason", st, why)
	}
}

// BenchmarkPods is ListPodSandbox's read of 500 ready pods (keeper and
// holder each) from memory; BenchmarkPodsProcReads adds the two /proc
// reads per pod that refresh did before liveness came from exits.
func BenchmarkPods(b *testing.B)          { benchmarkPods(b, false) }
func BenchmarkPodsProcReads(b *testing.B) { benchmarkPods(b, true) }

func benchmarkPods(b *testing.B, procReads bool) {
	self := os.Getpid()
	start, err := proc.StartTime(self)
	if err != nil {
		b.Fatal(err)
	}
	r := &Runtime{pods: map[string]*pod{}}
	for i := range 500 {
		id := fmt.Sprintf("%064x", i)
		r.pods[id] = &pod{Pod: Pod{ID: id, Config: sharedPIDConfig, State: PodReady,
			PausePID: self, PauseStart: start, PIDHolder: self, HolderStart: start}}
	}
	b.ReportAllocs()
	for b.Loop() {
		pods := r.Pods()
		if procReads {
			for _, p := range pods {
				if !proc.Alive(p.PausePID, p.PauseStart) || !proc.Alive(p.PIDHolder, p.HolderStart) {
					b.Fatal("not alive")
				}
			}
		}
	}
}
