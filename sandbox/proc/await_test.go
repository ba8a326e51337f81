package proc

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAwaitChildExitHoldsNoThread: waiting for 200 live children (a
// node's keepers) does not hold 200 OS threads, as exec.Cmd.Wait alone
// does, and every exit is still seen and reaped.
func TestAwaitChildExitHoldsNoThread(t *testing.T) {
	const n = 200
	before := threads(t)
	var cmds []*exec.Cmd
	done := make(chan int, n)
	t.Cleanup(func() {
		for _, c := range cmds {
			c.Process.Kill()
		}
	})
	for i := range n {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		go func() {
			AwaitChildExit(c.Process.Pid)
			c.Wait()
			done <- i
		}()
	}
	time.Sleep(500 * time.Millisecond) // let every waiter block
	if grew := threads(t) - before; grew > n/4 {
		t.Errorf("waiting for %d children holds %d more threads", n, grew)
	}
	for _, c := range cmds {
		c.Process.Kill()
	}
	timeout := time.After(20 * time.Second)
	for range n {
		select {
		case <-done:
		case <-timeout:
			t.Fatal("not every child's exit was seen")
		}
	}
	for _, c := range cmds {
		if c.ProcessState == nil {
			t.Fatalf("child %d not reaped", c.Process.Pid)
		}
	}
}

func threads(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads: in /proc/self/status")
	return 0
}
