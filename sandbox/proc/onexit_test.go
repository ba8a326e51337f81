package proc

import (
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestOnExitIgnoresSignals: a signal that lands while a watch checks its
// pidfd (SIGURG is the Go scheduler's own, SIGCHLD comes with every child
// exit) is not the process's exit. poll(2) then fails with EINTR; taking
// that for readiness made a live pod's namespace holder look dead (CI
// flake: "the pod's PID namespace holder exited" right after the start).
func TestOnExitIgnoresSignals(t *testing.T) {
	stop := make(chan struct{})
	var storm sync.WaitGroup
	for range 2 {
		storm.Add(1)
		go func() {
			defer storm.Done()
			for {
				select {
				case <-stop:
					return
				default:
					syscall.Kill(os.Getpid(), syscall.SIGURG)
				}
			}
		}()
	}
	defer func() { close(stop); storm.Wait() }()

	const rounds, watches = 10, 300
	var spurious atomic.Int64
	for range rounds {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		start, err := StartTime(c.Process.Pid)
		if err != nil {
			c.Process.Kill()
			c.Wait()
			t.Fatal(err)
		}
		var exited atomic.Bool
		var fired sync.WaitGroup
		for range watches {
			fired.Add(1)
			gone, err := OnExit(c.Process.Pid, start, func() {
				if !exited.Load() {
					spurious.Add(1)
				}
				fired.Done()
			})
			if gone || err != nil {
				t.Fatalf("OnExit of a live child: gone %v, err %v", gone, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		exited.Store(true)
		c.Process.Kill()
		c.Wait()
		fired.Wait() // every watch sees the real exit and closes its pidfd
	}
	if n := spurious.Load(); n > 0 {
		t.Errorf("%d of %d watches of a live process reported its exit while signals arrived", n, rounds*watches)
	}
}
