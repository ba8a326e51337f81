package integration

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRestartKeepsPods stops the daemon with a pod and running containers
// and starts it again on the same state: the pod and containers keep
// running, their logs keep flowing, and one killed meanwhile is reported
// with its real exit code.
func TestRestartKeepsPods(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("restart", t.TempDir())
	run := runPod(t, d, podCfg)
	pod := run.PodSandboxId
	ids := map[string]string{}
	for _, name := range []string{"keeps", "dies", "ticks"} {
		cfg := containerConfig(name, image, "sleep", "1000")
		if name == "ticks" {
			cfg = containerConfig(name, image, "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done")
		}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		ids[name] = cr.ContainerId
	}
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("later", image, "sh", "-c", "echo started-after-restart; sleep 1000"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	diesPID := containerPID(t, d, ids["dies"])

	d.Kill() // as a crash would: SIGKILL, no cleanup
	if err := syscall.Kill(diesPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill container process while the daemon is down: %v", err)
	}
	ticksLog := podCfg.LogDirectory + "/ticks.log"
	before := countLines(t, ticksLog)
	time.Sleep(500 * time.Millisecond)
	if after := countLines(t, ticksLog); after <= before {
		t.Errorf("the log did not grow while the daemon was down (%d then %d lines)", before, after)
	}
	d.Start()
	c = ctx(t)

	ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod after restart: %v, %v", ps, err)
	}
	if s := containerStatus(t, d, ids["keeps"]); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("running container after restart: %v", s.State)
	}
	ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ids["keeps"], Cmd: []string{"echo", "still-here"}})
	if err != nil || string(ex.Stdout) != "still-here\n" {
		t.Errorf("exec after restart: %v %q", err, ex.GetStdout())
	}
	waitFor(t, 10*time.Second, "the killed container to be reported exited", func() bool {
		return containerStatus(t, d, ids["dies"]).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s := containerStatus(t, d, ids["dies"]); s.ExitCode != 137 || s.Reason != "Error" {
		t.Errorf("container killed while the daemon was down: exit %d reason %q, want 137 Error", s.ExitCode, s.Reason)
	}
	// Every tick is in the log exactly once, across the crash.
	data, _ := os.ReadFile(ticksLog)
	seen := map[string]int{}
	last := -1
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			seen[f[3]]++
			var n int
			if _, err := fmt.Sscanf(f[3], "tick-%d", &n); err == nil && n > last {
				last = n
			}
		}
	}
	for i := 0; i <= last; i++ {
		if seen[fmt.Sprintf("tick-%d", i)] != 1 {
			t.Fatalf("tick-%d appears %d times in the log (last tick %d)", i, seen[fmt.Sprintf("tick-%d", i)], last)
		}
	}
	// A container created before the restart starts after it.
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		t.Fatalf("start a container created before the restart: %v", err)
	}
	waitFor(t, 10*time.Second, "its log line", func() bool {
		data, _ := os.ReadFile(podCfg.LogDirectory + "/later.log")
		return strings.Contains(string(data), "started-after-restart")
	})
	// A recovered container is stopped like any other.
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: ids["keeps"], Timeout: 5}); err != nil {
		t.Fatalf("stop a recovered container: %v", err)
	}
	if s := containerStatus(t, d, ids["keeps"]); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("recovered container after stop: %v", s.State)
	}
}

func countLines(t *testing.T, path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.Count(string(data), "\n")
}

func containerPID(t *testing.T, d *daemon, id string) int {
	t.Helper()
	resp, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Pid int }
	if err := jsonUnmarshal(resp.Info["info"], &info); err != nil || info.Pid == 0 {
		t.Fatalf("no pid in verbose status %v: %v", resp.Info, err)
	}
	return info.Pid
}
