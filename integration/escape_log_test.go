package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeLogSymlinkSwap: a directory of a container's log path replaced
// by a symlink to a host directory after the create (anyone who can write
// the pod's log directory can, e.g. a container with a hostPath mount of
// it) must not send the keeper's writes there: the log is opened beneath
// the pod's log directory without following symlinks, at start and at
// ReopenContainerLog. Start fails with a clear error; a failed reopen
// keeps writing to the file open before.
func TestEscapeLogSymlinkSwap(t *testing.T) {
	d, image := readyDaemon(t)
	logDir, canary := t.TempDir(), t.TempDir()
	podCfg := podConfig("logswap", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	canaryEmpty := func(when string) {
		t.Helper()
		if ents, _ := os.ReadDir(canary); len(ents) != 0 {
			t.Errorf("%s: the keeper wrote into the symlink's target: %v", when, ents)
		}
	}
	create := func(name, logPath string) string {
		t.Helper()
		cfg := containerConfig(name, image, "sh", "-c", "while true; do echo line; sleep 0.02; done")
		cfg.LogPath = logPath
		cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		return cr.ContainerId
	}

	// At start: sub is a symlink by then.
	ctr := create("at-start", "sub/0.log")
	if err := os.Symlink(canary, filepath.Join(logDir, "sub")); err != nil {
		t.Fatal(err)
	}
	_, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: ctr})
	if err == nil || !strings.Contains(err.Error(), "without symlinks") {
		t.Errorf("start with a symlinked log directory: %v, want a refusal naming symlinks", err)
	} else {
		t.Logf("start refused: %v", err)
	}
	canaryEmpty("after start")

	// At rotation: the kubelet renames the log, then asks for a reopen;
	// meanwhile the directory was swapped for a symlink.
	ctr = create("at-reopen", "sub2/0.log")
	if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: ctr}); err != nil {
		t.Fatal(err)
	}
	sub2 := filepath.Join(logDir, "sub2")
	waitFor(t, 10*time.Second, "log lines in sub2/0.log", func() bool {
		st, err := os.Lstat(filepath.Join(sub2, "0.log"))
		return err == nil && st.Mode().IsRegular() && st.Size() > 0
	})
	if err := os.Rename(sub2, sub2+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, sub2); err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: ctr})
	if err == nil || !strings.Contains(err.Error(), "without symlinks") {
		t.Errorf("reopen through a symlinked log directory: %v, want a refusal naming symlinks", err)
	} else {
		t.Logf("reopen refused: %v", err)
	}
	old := filepath.Join(sub2+".old", "0.log")
	st, _ := os.Stat(old)
	waitFor(t, 10*time.Second, "the old log to keep growing", func() bool {
		now, err := os.Stat(old)
		return err == nil && st != nil && now.Size() > st.Size()
	})
	canaryEmpty("after reopen")
}
