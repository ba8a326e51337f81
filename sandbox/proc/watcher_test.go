package proc

import (
	"os/exec"
	"regexp"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestExitWatchesShareOneGoroutine: 1,000 live processes watched (a
// node's keepers and holders; half through OnExit, half through
// OnChildExit, as the keeper's reaper does) cost no goroutine each, as one
// parked goroutine per watch did before (~5 KiB of stack a pod). Every
// exit is still reported exactly once, and a process that exited before
// its watch (reaped, or a zombie) is reported gone, its callback never
// called.
func TestExitWatchesShareOneGoroutine(t *testing.T) {
	const n = 1000
	if _, err := theWatcher(); err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, n)
	starts := make([]uint64, n)
	t.Cleanup(func() {
		for _, c := range cmds {
			if c != nil && c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	})
	for i := range cmds {
		c := exec.Command("sleep", "600")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = c
		var err error
		if starts[i], err = StartTime(c.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}

	runtime.GC()
	before := runtime.NumGoroutine()
	calls := make([]atomic.Int32, n)
	var fired atomic.Int32
	for i, c := range cmds {
		fn := func() {
			calls[i].Add(1)
			fired.Add(1)
		}
		if i%2 == 0 {
			gone, err := OnExit(c.Process.Pid, starts[i], fn)
			if gone || err != nil {
				t.Fatalf("OnExit of a live child: gone %v, err %v", gone, err)
			}
		} else if err := OnChildExit(c.Process.Pid, fn); err != nil {
			t.Fatal(err)
		}
	}
	if grew := runtime.NumGoroutine() - before; grew > 5 {
		t.Errorf("%d watches of live processes cost %d goroutines", n, grew)
	}
	time.Sleep(100 * time.Millisecond)
	if got := fired.Load(); got != 0 {
		t.Fatalf("%d watches of live processes fired", got)
	}
	if st := watcherState(); st != "IO wait" {
		t.Errorf("the exit watcher's goroutine is in %q, want \"IO wait\" (parked on Go's poller, no thread held)", st)
	}

	for _, c := range cmds {
		c.Process.Signal(syscall.SIGKILL)
	}
	deadline := time.Now().Add(30 * time.Second)
	for fired.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second report would come now
	for i := range calls {
		if got := calls[i].Load(); got != 1 {
			t.Errorf("watch %d (pid %d) fired %d times, want once", i, cmds[i].Process.Pid, got)
		}
	}
	w, _ := theWatcher()
	if p := w.pending(); p != 0 {
		t.Errorf("%d watches still pending after every process exited", p)
	}

	// Zombies (exited, not yet reaped), then reaped processes: gone.
	for round, state := range []string{"zombie", "reaped"} {
		if round == 1 {
			for _, c := range cmds {
				c.Wait()
			}
		}
		for i := 0; i < n; i += 10 {
			gone, err := OnExit(cmds[i].Process.Pid, starts[i], func() {
				t.Errorf("the watch of %s process %d fired", state, cmds[i].Process.Pid)
			})
			if !gone || err != nil {
				t.Errorf("OnExit of a %s process: gone %v, err %v; want gone", state, gone, err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
}

// watcherState is the scheduler's state of the exit watcher's goroutine
// ("IO wait" when it is parked on Go's poller), from a dump of all stacks.
func watcherState() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range regexp.MustCompile(`\n\n`).Split(string(buf), -1) {
		if m := regexp.MustCompile(`^goroutine \d+ \[([^,\]]+)`).FindStringSubmatch(g); m != nil &&
			regexp.MustCompile(`proc\.\(\*exitWatcher\)\.run`).MatchString(g) {
			return m[1]
		}
	}
	return "not found"
}

// TestBlockedExitCallbackStallsNoOther: a callback that blocks (the
// holder's takes its pod's mutex, which a StopPodSandbox holds while it
// waits for the keeper's reap, itself a callback) does not hold up the
// other watches: here the reap of a second child, the stop's wait.
func TestBlockedExitCallbackStallsNoOther(t *testing.T) {
	holder, keeper := exec.Command("sleep", "60"), exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{holder, keeper} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	podMu := make(chan struct{}) // held until the keeper is reaped
	reaped := make(chan struct{})
	if err := OnChildExit(holder.Process.Pid, func() { <-podMu; holder.Wait() }); err != nil {
		t.Fatal(err)
	}
	if err := OnChildExit(keeper.Process.Pid, func() { keeper.Wait(); close(reaped) }); err != nil {
		t.Fatal(err)
	}
	holder.Process.Kill()
	time.Sleep(100 * time.Millisecond) // the holder's exit is dispatched first
	keeper.Process.Kill()
	select {
	case <-reaped:
	case <-time.After(5 * time.Second):
		t.Error("a blocked exit callback held up another process's reap")
	}
	close(podMu)
}
