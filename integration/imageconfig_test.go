package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestImageStopSignalAndVolumes checks the parts of an image's config that
// live outside the process spec: STOPSIGNAL is what StopContainer sends
// first (unless the container config names one), and VOLUME directories
// exist in the container.
func TestImageStopSignalAndVolumes(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	testenv.PushImage(t, regAddr, "it/stopsig:1", testenv.BusyboxRootfs(t), testenv.ImageConfig{
		Cmd:        []string{"sh"},
		StopSignal: "SIGUSR1",
		Volumes:    []string{"/data/vol", "/cache"},
	})
	image := regAddr + "/it/stopsig:1"
	d := newDaemon(t, regAddr)
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	podCfg := podConfig("stopsig", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId

	// The trap answers only the image's signal; SIGTERM would kill sh with
	// 143 and SIGKILL (after the 20 s timeout) with 137.
	script := `trap 'echo got-usr1; exit 3' USR1; echo ready; while true; do sleep 0.1; done`
	cfg := containerConfig("trapper", image, "sh", "-c", script)
	cfg.LogPath = "trapper.log"
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/cache", HostPath: t.TempDir()}}
	id := startContainer(t, d, pod, podCfg, cfg)
	if s := containerStatus(t, d, id); s.StopSignal != runtimeapi.Signal_SIGNAL_SIGUSR1 {
		t.Errorf("stop signal = %v, want SIGUSR1 from the image", s.StopSignal)
	}
	ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"test", "-d", "/data/vol"}, Timeout: 10})
	if err != nil || ex.ExitCode != 0 {
		t.Errorf("image volume /data/vol is not a directory in the container: %v %v %s", err, ex.GetExitCode(), ex.GetStderr())
	}
	waitFor(t, 10*time.Second, "the trap to be set", func() bool {
		data, _ := os.ReadFile(logDir + "/trapper.log")
		return strings.Contains(string(data), "ready")
	})
	start := time.Now()
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 20}); err != nil {
		t.Fatal(err)
	}
	s := containerStatus(t, d, id)
	if s.ExitCode != 3 || time.Since(start) > 10*time.Second {
		t.Errorf("after stop: exit %d in %v, want 3 (the USR1 trap) well before the timeout", s.ExitCode, time.Since(start))
	}
	if data, _ := os.ReadFile(logDir + "/trapper.log"); !strings.Contains(string(data), "got-usr1") {
		t.Errorf("trap output missing from log: %q", data)
	}

	// A signal in the container config wins over the image's.
	cfg2 := containerConfig("override", image, "sleep", "1000")
	cfg2.StopSignal = runtimeapi.Signal_SIGNAL_SIGINT
	id2 := startContainer(t, d, pod, podCfg, cfg2)
	if s := containerStatus(t, d, id2); s.StopSignal != runtimeapi.Signal_SIGNAL_SIGINT {
		t.Errorf("stop signal = %v, want SIGINT from the container config", s.StopSignal)
	}
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id2, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
}
