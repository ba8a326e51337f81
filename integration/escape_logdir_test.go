package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeLogPodDirSymlink: the pod's log directory itself (the
// kubelet's /var/log/pods/<ns>_<name>_<uid>) replaced by a symlink to a
// host directory, as a container with a hostPath mount of /var/log/pods
// can do to any pod's entry, must not make the keeper create the next
// container's log directory and file in the symlink's target (root-owned
// files of the container's output anywhere on the host). The start is
// refused with an error naming symlinks, and nothing appears in the target.
func TestEscapeLogPodDirSymlink(t *testing.T) {
	d, image := readyDaemon(t)
	base, canary := t.TempDir(), t.TempDir()
	logDir := filepath.Join(base, "default_logdirswap_uid")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("logdirswap", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("victim", image, "sh", "-c", "while true; do echo line; sleep 0.02; done")
	cfg.LogPath = "victim/0.log"
	cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	// After the create, before the start (a restart of a crashed container
	// is the same: a new create and start in the same pod log directory).
	if err := os.Rename(logDir, logDir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, logDir); err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("start with the pod's log directory replaced by a symlink: %v, want a refusal naming symlinks", err)
	} else {
		t.Logf("start refused: %v", err)
	}
	if ents, _ := os.ReadDir(canary); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the keeper created %v in the symlink's target", names)
	}
}
