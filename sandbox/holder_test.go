package sandbox

import (
	"github.com/peapod-cri/peapod/sandbox/proc"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/pause"
)

// startTestPause runs this test binary as a keeper with a PID holder (the
// pause package's constructor takes over) and returns it and the holder.
func startTestPause(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for namespaces")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], pause.Command, "-P")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	msg, _ := io.ReadAll(r)
	holder, ok := strings.CutPrefix(strings.TrimSpace(string(msg)), "ok ")
	pid, err := strconv.Atoi(holder)
	if !ok || err != nil || pid <= 0 {
		t.Fatalf("pause reported %q", msg)
	}
	return cmd, pid
}

// A pod recorded by a peapod that did not record the holder's start time:
// the holder is recognised (the keeper's child in another PID namespace),
// a process that only has the recorded PID is not, and the pod is then
// NotReady with the holder's reason.
func TestRecoverHolderStart(t *testing.T) {
	keeper, holder := startTestPause(t)
	keeperStart, err := proc.StartTime(keeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}}}
	p := &pod{Pod: Pod{Config: cfg, State: PodReady, PausePID: keeper.Process.Pid, PauseStart: keeperStart, PIDHolder: holder}}
	recoverHolderStart(&p.Pod)
	want, _ := proc.StartTime(holder)
	if p.HolderStart == 0 || p.HolderStart != want {
		t.Errorf("holder start %d, want %d", p.HolderStart, want)
	}
	p.refresh()
	if p.State != PodReady {
		t.Errorf("pod with its holder not ready: %s", p.NotReadyReason)
	}

	// Another process with the recorded PID: not the keeper's child.
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	p = &pod{Pod: Pod{Config: cfg, State: PodReady, PausePID: keeper.Process.Pid, PauseStart: keeperStart, PIDHolder: other.Process.Pid}}
	recoverHolderStart(&p.Pod)
	if p.HolderStart != 0 {
		t.Errorf("an unrelated process %d taken for the holder", other.Process.Pid)
	}
	testRuntime(nil).watchPod(p) // start time 0 names no process: gone already
	p.refresh()
	if p.State != PodNotReady || !strings.Contains(p.NotReadyReason, "PID namespace holder exited") {
		t.Errorf("pod state %s (%q), want NotReady for its holder", p.State, p.NotReadyReason)
	}
}
