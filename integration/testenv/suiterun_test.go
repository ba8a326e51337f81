package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunSuiteExitStatus(t *testing.T) {
	rc, err := RunSuite(exec.CommandContext(context.Background(), "sh", "-c", "exit 3"), time.Second)
	if err != nil || rc != 3 {
		t.Errorf("RunSuite(exit 3) = %d, %v; want 3, nil", rc, err)
	}
	if _, err := RunSuite(exec.CommandContext(context.Background(), filepath.Join(t.TempDir(), "missing")), time.Second); err == nil {
		t.Error("RunSuite of a missing binary: no error")
	}
}

// A cancelled run interrupts the whole group: the shell traps SIGINT and
// exits 7 (so SIGINT reached it, not SIGKILL), and its background child,
// which ignores SIGINT, is killed when the run returns.
func TestRunSuiteCancelStopsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithCancel(context.Background())
	script := `trap 'exit 7' INT; (trap '' INT; exec sleep 300) & echo $! > ` + pidFile + `; while :; do sleep 0.05; done`
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	go func() {
		for i := 0; i < 200; i++ {
			if _, err := os.Stat(pidFile); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	rc, err := RunSuite(cmd, 5*time.Second)
	if err != nil || rc != 7 {
		t.Errorf("RunSuite after cancel = %d, %v; want 7 (SIGINT trapped), nil", rc, err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// A zombie until its reaper (init or a subreaper) waits for it.
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("background child %d of the suite survived the run", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
