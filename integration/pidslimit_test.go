package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPidsLimit: with pids_limit = 50 each container's cgroup has pids.max
// 50, so a fork loop in one container stops at 50 processes while its pod
// goes on: the pod's other container still runs commands, and the looping
// one does too once its processes are gone. A container whose resources
// set pids.max (cgroup v2) keeps its own.
func TestPidsLimit(t *testing.T) {
	const limit = 50
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte("pids_limit = "+strconv.Itoa(limit)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = []string{"--config", conf}
	d.Start()
	pull(t, d, image)
	if !hasController("pids") {
		t.Skip("no pids cgroup controller here")
	}

	podCfg := podConfig("pids", filepath.Join(d.Dir, "logs"))
	pod := runPod(t, d, podCfg).PodSandboxId
	bomb := startContainer(t, d, pod, podCfg, containerConfig("bomb", image, "sleep", "300"))
	other := startContainer(t, d, pod, podCfg, containerConfig("other", image, "sleep", "300"))
	rel := func(ctr string) string {
		return filepath.Join(d.CgroupParent, "peapod-pod-"+pod, "peapod-"+ctr)
	}
	for _, ctr := range []string{bomb, other} {
		if got := readCgroup(t, "pids", rel(ctr), "pids.max"); got != strconv.Itoa(limit) {
			t.Errorf("pids.max of container %s = %q, want %d", ctr, got, limit)
		}
	}

	// Twice the limit of processes that live a few seconds.
	loop := "i=0; while [ $i -lt " + strconv.Itoa(2*limit) + " ]; do sleep 8 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned"
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: bomb, Cmd: []string{"sh", "-c", loop}, Timeout: 30})
	if err != nil {
		t.Fatalf("exec the fork loop: %v", err)
	}
	peak, _ := strconv.Atoi(readCgroup(t, "pids", rel(bomb), "pids.current"))
	if peak > limit {
		t.Errorf("the container runs %d processes, over its limit %d", peak, limit)
	}
	if peak < limit-5 {
		t.Errorf("the container runs %d processes: the fork loop did not reach the limit %d (exit %d, %s%s)", peak, limit, r.ExitCode, r.Stdout, r.Stderr)
	}
	if !strings.Contains(string(r.Stderr), "fork") && r.ExitCode == 0 {
		t.Errorf("no fork of the loop failed: exit %d, %s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	// The pod goes on.
	if got := strings.TrimSpace(execOut(t, d, other, "echo", "ok")); got != "ok" {
		t.Errorf("the pod's other container answers %q", got)
	}
	waitFor(t, 30*time.Second, "the looping container to run commands again", func() bool {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: bomb, Cmd: []string{"echo", "ok"}, Timeout: 10})
		return err == nil && r.ExitCode == 0
	})

	// Resources that name pids.max win (a unified key: cgroup v2 only).
	if cgroupV2() {
		cfg := containerConfig("own", image, "sleep", "300")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"pids.max": "80"}}}
		own := startContainer(t, d, pod, podCfg, cfg)
		if got := readCgroup(t, "pids", rel(own), "pids.max"); got != "80" {
			t.Errorf("pids.max of a container asking for 80 = %q", got)
		}
	}
}
