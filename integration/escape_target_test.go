package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeTargetPIDNamespace: a container whose PID namespace mode is
// TARGET (what the kubelet sends for kubectl debug --target) or NODE in a
// pod that is not hostPID must never run in the host's PID namespace. It
// did: without a PID namespace entry in its spec the container shared the
// runner's, the host's, and saw (and, as root with CAP_KILL, could signal)
// every host process. NODE is refused (InvalidArgument); TARGET runs in
// its target's PID namespace and sees the target's processes (it was
// refused until kubectl debug --target needed it in a kind cluster).
func TestEscapeTargetPIDNamespace(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("target", t.TempDir())
	own := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	podCfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: own}}
	pod := runPod(t, d, podCfg).PodSandboxId
	tcfg := containerConfig("app", image, "sleep", "1000")
	tcfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: own}}
	target := startContainer(t, d, pod, podCfg, tcfg)
	hostNS, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	pidNS := func(id string) string {
		t.Helper()
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"readlink", "/proc/self/ns/pid"}, Timeout: 20})
		if err != nil {
			t.Fatalf("exec in %s: %v", id, err)
		}
		return strings.TrimSpace(string(r.Stdout))
	}
	targetNS := pidNS(target)
	for name, ns := range map[string]*runtimeapi.NamespaceOption{
		"target": {Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target},
		"node":   {Pid: runtimeapi.NamespaceMode_NODE},
	} {
		cfg := containerConfig("debug-"+name, image, "sleep", "1000")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			if name == "target" || status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %v, want InvalidArgument for node, success for target", name, err)
			}
			continue
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			if name == "target" {
				t.Errorf("start the TARGET container: %v", err)
			}
			continue // did not run at all
		}
		got := pidNS(cr.ContainerId)
		if got == hostNS {
			t.Errorf("%s: the container runs in the host's PID namespace %s", name, got)
		} else if name == "target" && got != targetNS {
			t.Errorf("%s: PID namespace %s, want the target's %s", name, got, targetNS)
		}
		if name == "target" {
			r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: cr.ContainerId, Cmd: []string{"cat", "/proc/1/cmdline"}, Timeout: 20})
			if err != nil || strings.ReplaceAll(string(r.GetStdout()), "\x00", " ") != "sleep 1000 " {
				t.Errorf("TARGET container's PID 1 = %q, %v; want the target's sleep 1000", r.GetStdout(), err)
			}
		}
	}
	// A target that exits between the create and the start: the start is
	// refused (its PID may be another process's by then).
	t2cfg := containerConfig("app2", image, "sleep", "1000")
	t2cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: own}}
	target2 := startContainer(t, d, pod, podCfg, t2cfg)
	late := containerConfig("debug-late", image, "sleep", "1000")
	late.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target2}}}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: late, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("create a TARGET container: %v", err)
	}
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: target2, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("start a TARGET container whose target exited: %v, want FailedPrecondition", err)
	}

	// A target that is not a container of the pod is refused.
	other := runPod(t, d, podConfig("other", t.TempDir())).PodSandboxId
	cfg := containerConfig("debug-other", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target}}}
	if _, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: other, Config: cfg, SandboxConfig: podConfig("other", "")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("TARGET in another pod: %v, want InvalidArgument", err)
	}
	// The namespace is joined through a pin taken by handle at create,
	// never through /proc/<pid>, which a reused PID could redirect; the
	// pins go with their containers.
	pins := 0
	for _, m := range mountsUnder(d.Dir) {
		if strings.HasSuffix(m, "/target-pidns") {
			pins++
		}
	}
	if pins != 2 {
		t.Errorf("%d PID namespace pins mounted, want 2 (debug-target, debug-late)", pins)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the PID namespace pins to be released", func() bool {
		for _, m := range mountsUnder(d.Dir) {
			if strings.HasSuffix(m, "/target-pidns") {
				return false
			}
		}
		return true
	})

}
