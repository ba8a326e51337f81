package integration

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodLifecycle drives a real daemon through a whole pod lifetime with a
// real CRI client: pull → run pod → create → start → logs → exec → stop →
// remove, checking each state, exit code and log line.
func TestPodLifecycle(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	c := ctx(t)

	pulled, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		t.Fatalf("pull through mirror: %v", err)
	}
	st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil || st.Image == nil || st.Image.Id != pulled.ImageRef || !contains(st.Image.RepoTags, image) {
		t.Fatalf("image status = %v, %v; want id %s and tag %s", st, err, pulled.ImageRef, image)
	}

	logDir := t.TempDir()
	podCfg := podConfig("life", logDir)
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatalf("run pod: %v", err)
	}
	pod := run.PodSandboxId
	ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod status = %v, %v; want ready", ps, err)
	}
	if ps.Status.Labels["app"] != "life" || ps.Status.Annotations["note"] != "integration" || ps.Status.Metadata.Name != "life" {
		t.Errorf("pod labels/annotations/metadata not returned: %v", ps.Status)
	}

	// A long-running container that logs to both streams.
	mainCfg := containerConfig("main", image, "sh", "-c", "echo hello-out; echo hello-err >&2; exec sleep 1000")
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: mainCfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	mainID := created.ContainerId
	if s := containerStatus(t, d, mainID); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("after create: state %v", s.State)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: mainID}); err != nil {
		t.Fatalf("start: %v", err)
	}
	s := containerStatus(t, d, mainID)
	if s.State != runtimeapi.ContainerState_CONTAINER_RUNNING || s.StartedAt == 0 {
		t.Fatalf("after start: %v", s)
	}
	logFile := logDir + "/main.log"
	waitFor(t, 10*time.Second, "both log lines", func() bool {
		data, _ := os.ReadFile(logFile)
		return strings.Contains(string(data), "hello-err") && strings.Contains(string(data), "hello-out")
	})
	data, _ := os.ReadFile(logFile)
	for _, want := range []string{`^\S+ stdout F hello-out$`, `^\S+ stderr F hello-err$`} {
		if !regexp.MustCompile("(?m)" + want).Match(data) {
			t.Errorf("log %s has no line matching %s:\n%s", logFile, want, data)
		}
	}

	// Exec: output, exit codes, the pod's hostname and DNS, and a timeout
	// that kills and reaps the process.
	ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: mainID, Cmd: []string{"sh", "-c", "hostname; cat /etc/resolv.conf; echo to-err >&2; exit 3"}})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	out := string(ex.Stdout)
	if ex.ExitCode != 3 || !strings.Contains(out, "life-host") || !strings.Contains(out, "nameserver 10.0.0.10") ||
		!strings.Contains(out, "search it.svc") || string(ex.Stderr) != "to-err\n" {
		t.Errorf("exec = code %d stdout %q stderr %q", ex.ExitCode, ex.Stdout, ex.Stderr)
	}
	start := time.Now()
	_, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: mainID, Cmd: []string{"sleep", "77"}, Timeout: 1})
	if code := grpcCode(err); code != "DeadlineExceeded" {
		t.Errorf("exec past its timeout: %v (code %s), want DeadlineExceeded", err, code)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("exec timeout took %s", time.Since(start))
	}
	ex, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: mainID, Cmd: []string{"ps", "-o", "pid,stat,args"}})
	if err != nil || strings.Contains(string(ex.Stdout), "sleep 77") {
		t.Errorf("timed-out exec left a process behind (%v):\n%s", err, ex.GetStdout())
	}

	// Containers that end on their own: exit 0 is Completed, non-zero Error.
	for _, tc := range []struct {
		name   string
		cmd    string
		code   int32
		reason string
	}{{"ok", "echo done", 0, "Completed"}, {"bad", "exit 7", 7, "Error"}} {
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(tc.name, image, "sh", "-c", tc.cmd), SandboxConfig: podCfg})
		if err != nil {
			t.Fatalf("create %s: %v", tc.name, err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatalf("start %s: %v", tc.name, err)
		}
		var s *runtimeapi.ContainerStatus
		waitFor(t, 10*time.Second, tc.name+" to exit", func() bool {
			s = containerStatus(t, d, cr.ContainerId)
			return s.State == runtimeapi.ContainerState_CONTAINER_EXITED
		})
		if s.ExitCode != tc.code || s.Reason != tc.reason || s.FinishedAt < s.StartedAt {
			t.Errorf("%s: exit %d reason %q finished %d started %d; want %d %q", tc.name, s.ExitCode, s.Reason, s.FinishedAt, s.StartedAt, tc.code, tc.reason)
		}
	}

	// List filters.
	list := func(f *runtimeapi.ContainerFilter) int {
		resp, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Containers)
	}
	running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	if n := list(&runtimeapi.ContainerFilter{PodSandboxId: pod}); n != 3 {
		t.Errorf("containers in pod = %d, want 3", n)
	}
	if n := list(&runtimeapi.ContainerFilter{State: running}); n != 1 {
		t.Errorf("running containers = %d, want 1", n)
	}
	if n := list(&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "bad"}}); n != 1 {
		t.Errorf("containers labelled bad = %d, want 1", n)
	}
	if n := list(&runtimeapi.ContainerFilter{Id: mainID[:12]}); n != 1 {
		t.Errorf("containers by ID prefix = %d, want 1", n)
	}

	// Stop: SIGTERM ends sleep, exit code 143.
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: mainID, Timeout: 10}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s = containerStatus(t, d, mainID)
	if s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.ExitCode != 143 || s.Reason != "Error" {
		t.Errorf("after stop: state %v exit %d reason %q", s.State, s.ExitCode, s.Reason)
	}
	if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: mainID}); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: mainID}); grpcCode(err) != "NotFound" {
		t.Errorf("status of removed container: %v, want NotFound", err)
	}

	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("stop pod: %v", err)
	}
	ps, err = d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("after stop pod: %v, %v", ps, err)
	}
	notReady := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}
	pl, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{State: notReady, LabelSelector: map[string]string{"app": "life"}}})
	if err != nil || len(pl.Items) != 1 {
		t.Errorf("list not-ready pods labelled app=life: %v, %v", pl, err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("remove pod: %v", err)
	}
	pl, _ = d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	cl, _ := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{})
	if len(pl.GetItems()) != 0 || len(cl.GetContainers()) != 0 {
		t.Errorf("after removing the pod: %d pods, %d containers left", len(pl.GetItems()), len(cl.GetContainers()))
	}
	if m := mountsUnder(d.Dir); len(m) > 2 {
		// Only the image store's own overlay home may stay mounted while it runs.
		t.Errorf("mounts left after removing the pod: %v", m)
	}
}

func containerStatus(t *testing.T, d *daemon, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("container status %s: %v", id, err)
	}
	return resp.Status
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
