package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRestartKeepsPods stops the daemon with a pod and a running container
// and starts it again on the same state: the pod and container keep running
// and are reported as before; one whose process died meanwhile is Exited.
func TestRestartKeepsPods(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.start()
	c := ctx(t)
	if _, err := d.img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("restart", t.TempDir())
	run, err := d.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	pod := run.PodSandboxId
	ids := map[string]string{}
	for _, name := range []string{"keeps", "dies"} {
		cr, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(name, image, "sleep", "1000"), SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		ids[name] = cr.ContainerId
	}
	created, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("later", image, "sh", "-c", "echo started-after-restart; sleep 1000"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	diesPID := containerPID(t, d, ids["dies"])

	d.stop()
	if err := syscall.Kill(diesPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill container process while the daemon is down: %v", err)
	}
	d.start()
	c = ctx(t)

	ps, err := d.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod after restart: %v, %v", ps, err)
	}
	if s := containerStatus(t, d, ids["keeps"]); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("running container after restart: %v", s.State)
	}
	ex, err := d.rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ids["keeps"], Cmd: []string{"echo", "still-here"}})
	if err != nil || string(ex.Stdout) != "still-here\n" {
		t.Errorf("exec after restart: %v %q", err, ex.GetStdout())
	}
	waitFor(t, 10*time.Second, "the killed container to be reported exited", func() bool {
		return containerStatus(t, d, ids["dies"]).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	// A container created before the restart starts after it.
	if _, err := d.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		t.Fatalf("start a container created before the restart: %v", err)
	}
	waitFor(t, 10*time.Second, "its log line", func() bool {
		data, _ := os.ReadFile(podCfg.LogDirectory + "/later.log")
		return strings.Contains(string(data), "started-after-restart")
	})
	// A recovered container is stopped like any other.
	if _, err := d.rt.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: ids["keeps"], Timeout: 5}); err != nil {
		t.Fatalf("stop a recovered container: %v", err)
	}
	if s := containerStatus(t, d, ids["keeps"]); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("recovered container after stop: %v", s.State)
	}
}

func containerPID(t *testing.T, d *daemon, id string) int {
	t.Helper()
	resp, err := d.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Pid int }
	if err := jsonUnmarshal(resp.Info["info"], &info); err != nil || info.Pid == 0 {
		t.Fatalf("no pid in verbose status %v: %v", resp.Info, err)
	}
	return info.Pid
}
