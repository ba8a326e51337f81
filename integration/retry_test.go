package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// daemonLogHas reports whether the daemon's log contains s.
func daemonLogHas(d *daemon, s string) bool {
	data, _ := os.ReadFile(d.LogPath)
	return strings.Contains(string(data), s)
}

// kubelet's retry: RunPodSandbox and CreateContainer whose caller gives up
// finish in the background, and the retry with the same name gets the same
// pod and container; nothing is made twice, and nothing is left behind
// (daemon.destroy checks processes, mounts, cgroups and veths).
func TestRetryAfterDeadline(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("retry", t.TempDir())

	short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	_, err := d.RT.RunPodSandbox(short, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("RunPodSandbox with a 1 ms deadline: %v, want DeadlineExceeded", err)
	}
	// The request reaches the daemon unless the deadline passed before it
	// was sent; then there is nothing to hand over, and the test says so.
	reached := false
	deadline := time.Now().Add(2 * time.Second)
	for !reached && time.Now().Before(deadline) {
		reached = daemonLogHas(d, "RunPodSandbox")
		time.Sleep(20 * time.Millisecond)
	}

	// Another config under the same name is refused, as before.
	other := podConfig("retry", t.TempDir())
	other.Hostname = "other"
	if reached {
		if _, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: other}); status.Code(err) != codes.AlreadyExists {
			t.Errorf("RunPodSandbox with another config under the same name: %v, want AlreadyExists", err)
		}
	}

	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatalf("retry of RunPodSandbox: %v", err)
	}
	pod := run.PodSandboxId
	if reached && !daemonLogHas(d, "pod handed to a retry") {
		t.Errorf("the retry did not get the first call's pod (no handover in the daemon log)")
	}
	if !reached {
		t.Logf("the 1 ms RunPodSandbox never reached the daemon; only the retry ran")
	}
	pods, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Id != pod {
		t.Fatalf("pods after the retry: %v, %v; want only %s", pods, err, pod)
	}
	if n := countDir(t, d.State+"/pods"); n != 1 {
		t.Errorf("%d pod directories, want 1", n)
	}
	names := map[string]bool{}
	for _, dir := range cgroupChildren(d.CgroupParent) {
		names[filepath.Base(dir)] = true
	}
	if len(names) != 1 {
		t.Errorf("pod cgroups %v, want one", names)
	}
	// The retry that was handed the pod used it up: the same name again is
	// a duplicate.
	if _, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("RunPodSandbox again after the retry: %v, want AlreadyExists", err)
	}

	// The same for CreateContainer.
	cfg := containerConfig("main", image, "sleep", "1000")
	short, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	_, err = d.RT.CreateContainer(short, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("CreateContainer with a 1 ms deadline: %v, want DeadlineExceeded", err)
	}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("retry of CreateContainer: %v", err)
	}
	ctrs, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{})
	if err != nil || len(ctrs.Containers) != 1 || ctrs.Containers[0].Id != cr.ContainerId {
		t.Fatalf("containers after the retry: %v, %v; want only %s", ctrs, err, cr.ContainerId)
	}
	if n := countDir(t, d.State+"/containers"); n != 1 {
		t.Errorf("%d container bundles, want 1", n)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("start the container the retry got: %v", err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	// Stop and Remove of what is gone are still no errors.
	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Errorf("StopPodSandbox of a removed pod: %v", err)
	}
	if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Errorf("RemoveContainer of a removed container: %v", err)
	}
	if n := countDir(t, d.State+"/pods") + countDir(t, d.State+"/containers"); n != 0 {
		t.Errorf("%d pod or container directories left", n)
	}
}

func countDir(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
