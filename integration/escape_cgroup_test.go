package integration

import (
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeCgroupV2Writes: on cgroup v2 a container has a cgroup
// namespace of its own whose root is its cgroup, so /sys/fs/cgroup holds
// its own limits. A container that is not privileged, with the default
// capabilities (root, CAP_DAC_OVERRIDE), must not be able to raise its
// memory.max or pids.max, enable controllers for children, make a child
// cgroup (to move into one the limits it escapes, or to keep processes
// out of reach), move a process or freeze itself: the mount is read-only,
// and the limits stay what the host set. On v1 it skips (make
// test-cgroupv2 runs it: CGV2_TESTS).
func TestEscapeCgroupV2Writes(t *testing.T) {
	if !cgroupV2() {
		t.Skip("cgroup v2 only")
	}
	d, image := readyDaemon(t)
	podCfg := podConfig("v2writes", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("writer", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}
	id := startContainer(t, d, pod, podCfg, cfg)
	rel := ctrCgroupRel(d, pod, id)

	run := func(script string) (int32, string) {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", script}, Timeout: 20})
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return r.ExitCode, strings.TrimSpace(string(r.Stdout) + string(r.Stderr))
	}
	// What the container sees is its own cgroup (the namespace's root).
	if code, out := run("cat /sys/fs/cgroup/memory.max"); code != 0 || out != strconv.Itoa(64<<20) {
		t.Fatalf("the container's /sys/fs/cgroup/memory.max = %q (exit %d), want its own limit %d", out, code, 64<<20)
	}
	for _, tc := range []struct{ what, script string }{
		{"raise memory.max", "echo max > /sys/fs/cgroup/memory.max"},
		{"raise pids.max", "echo max > /sys/fs/cgroup/pids.max"},
		{"enable controllers for children", "echo +memory > /sys/fs/cgroup/cgroup.subtree_control"},
		{"make a child cgroup", "mkdir /sys/fs/cgroup/escape"},
		{"move itself", "echo $$ > /sys/fs/cgroup/cgroup.procs"},
		{"freeze itself", "echo 1 > /sys/fs/cgroup/cgroup.freeze"},
		{"kill its cgroup", "echo 1 > /sys/fs/cgroup/cgroup.kill"},
		{"remount rw", "mount -o remount,rw /sys/fs/cgroup"},
		{"mount a cgroup2 of its own", "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && echo max > /tmp/cg/memory.max"},
	} {
		if code, out := run(tc.script); code == 0 {
			t.Errorf("%s: %q succeeded in a container that is not privileged (%s)", tc.what, tc.script, out)
		} else {
			t.Logf("%s: refused (%s)", tc.what, out)
		}
	}
	expectCgroup(t, rel, nil, map[string]string{"memory/memory.max": strconv.Itoa(64 << 20)})
	if _, kids := run("ls -d /sys/fs/cgroup/*/ 2>/dev/null | wc -l"); kids != "0" {
		t.Errorf("the container's cgroup has %s child cgroups", kids)
	}
}
