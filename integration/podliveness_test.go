package integration

import (
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNotReadyListed: a pod whose keeper (pause) or PID namespace
// holder is killed from the host is listed NOTREADY by ListPodSandbox
// within a second, with the reason PodSandboxStatus gave before liveness
// came from exit notifications instead of /proc (sandbox/liveness.go),
// while the other pods stay READY; the same for pods recovered by a
// restarted daemon, whose keepers it did not start and cannot reap.
func TestPodNotReadyListed(t *testing.T) {
	d := newDaemon(t, "127.0.0.1:1") // pods only: nothing is pulled
	d.Start()
	run := func(name string, sharedPID bool) string {
		pod, _ := shapePod(t, d, podShape{sharedPID: sharedPID}, name, 0)
		return pod
	}
	pods := map[string]string{
		"keeper":         run("keeper", true), // the holder dies with it
		"keeper-alone":   run("keeper-alone", false),
		"holder":         run("holder", true),
		"keeper-restart": run("keeper-restart", true),
		"holder-restart": run("holder-restart", true),
		"alone-restart":  run("alone-restart", false),
		"stays":          run("stays", false),
	}
	const pauseReason = "the pod's pause process exited"
	const holderReason = "the pod's PID namespace holder exited"

	listed := func() map[string]runtimeapi.PodSandboxState {
		resp, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]runtimeapi.PodSandboxState{}
		for _, p := range resp.Items {
			out[p.Id] = p.State
		}
		return out
	}
	// kill kills the pod's keeper or holder and returns how long until
	// the list reports the pod NOTREADY.
	kill := func(name string, holder bool, want string) {
		t.Helper()
		pod := pods[name]
		keeperPID, holderPID, _ := podProcs(t, d, pod)
		pid := keeperPID
		if holder {
			pid = holderPID
		}
		if pid <= 0 {
			t.Fatalf("pod %s: no process to kill (keeper %d, holder %d)", name, keeperPID, holderPID)
		}
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		waitFor(t, time.Second, "pod "+name+" listed NOTREADY", func() bool {
			return listed()[pod] == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		})
		took := time.Since(t0)
		if ready, why := podReady(t, d, pod); ready || why != want {
			t.Errorf("pod %s: status ready=%v reason %q, want NotReady %q", name, ready, why, want)
		}
		t.Logf("pod %s: process %d killed, listed NOTREADY after %v", name, pid, took.Round(time.Millisecond))
	}
	stillReady := func(names ...string) {
		t.Helper()
		l := listed()
		for _, n := range names {
			if l[pods[n]] != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("pod %s listed %v, want READY", n, l[pods[n]])
			}
		}
	}

	kill("keeper", false, pauseReason)
	kill("keeper-alone", false, pauseReason)
	kill("holder", true, holderReason)
	stillReady("keeper-restart", "holder-restart", "alone-restart", "stays")

	d.Stop()
	d.Start()
	l := listed()
	if len(l) != len(pods) {
		t.Fatalf("%d pods listed after the restart, want %d", len(l), len(pods))
	}
	for _, n := range []string{"keeper", "keeper-alone", "holder"} {
		if l[pods[n]] != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("pod %s listed %v after the restart, want NOTREADY", n, l[pods[n]])
		}
	}
	stillReady("keeper-restart", "holder-restart", "alone-restart", "stays")
	kill("keeper-restart", false, pauseReason)
	kill("alone-restart", false, pauseReason)
	kill("holder-restart", true, holderReason)
	stillReady("stays")
}
