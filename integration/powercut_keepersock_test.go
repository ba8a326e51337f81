package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestKeeperSocketRestored: while the daemon is stopped, a running pod's
// keeper socket is removed, replaced by a file, or the directory holding
// the sockets is removed or replaced by a file. The daemon starts every
// time, the keeper binds its socket again, and the pod is fully managed:
// ready, its container running, its log reopened (a call to the keeper)
// and still written, and it stops and is removed cleanly.
func TestKeeperSocketRestored(t *testing.T) {
	d, image := readyDaemon(t)
	t.Cleanup(func() {
		if d.Cmd == nil {
			d.Start()
		}
	})
	kdir := filepath.Join(d.State, "k")
	damages := []struct {
		name   string
		damage func(t *testing.T, sock string)
	}{
		{"socket-removed", func(t *testing.T, sock string) { mustDo(t, os.Remove(sock)) }},
		{"socket-replaced", func(t *testing.T, sock string) {
			mustDo(t, os.Remove(sock))
			mustDo(t, os.WriteFile(sock, []byte("garbage"), 0o600))
		}},
		{"dir-removed", func(t *testing.T, sock string) { mustDo(t, os.RemoveAll(kdir)) }},
		{"dir-replaced", func(t *testing.T, sock string) {
			mustDo(t, os.RemoveAll(kdir))
			mustDo(t, os.WriteFile(kdir, []byte("garbage"), 0o600))
		}},
	}
	for _, dm := range damages {
		logDir := t.TempDir()
		cfg := podConfig("ks-"+dm.name, logDir)
		pod := runPod(t, d, cfg).PodSandboxId
		ctr := startContainer(t, d, pod, cfg, containerConfig("c", image, "sh", "-c", "while :; do echo tick; sleep 0.2; done"))
		sock := filepath.Join(kdir, pod[:32])
		if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("%s: no keeper socket at %s (%v)", dm.name, sock, err)
		}
		d.Stop()
		dm.damage(t, sock)
		d.Start()
		if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: the keeper socket was not made again (%v)", dm.name, err)
		}
		c := ctx(t)
		st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
		if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("%s: pod after the restart: %v %v", dm.name, st.GetStatus().GetState(), err)
		}
		cs, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
		if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("%s: container after the restart: %v %v", dm.name, cs.GetStatus().GetState(), err)
		}
		logPath := filepath.Join(logDir, "c.log")
		mustDo(t, os.Rename(logPath, logPath+".1"))
		if _, err := d.RT.ReopenContainerLog(c, &runtimeapi.ReopenContainerLogRequest{ContainerId: ctr}); err != nil {
			t.Errorf("%s: ReopenContainerLog (the keeper's): %v", dm.name, err)
		} else {
			waitFor(t, 10*time.Second, dm.name+": the reopened log to be written", func() bool {
				b, _ := os.ReadFile(logPath)
				return strings.Contains(string(b), "tick")
			})
		}
		if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Errorf("%s: stop: %v", dm.name, err)
		}
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Errorf("%s: remove: %v", dm.name, err)
		}
		if log := readLog(t, d); strings.Contains(dm.name, "dir-replaced") && !strings.Contains(log, "moved aside and made again") {
			t.Errorf("%s: the log does not say the directory was moved aside", dm.name)
		}
	}
	matches, _ := filepath.Glob(kdir + ".unusable-*")
	for _, m := range matches {
		os.Remove(m)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
