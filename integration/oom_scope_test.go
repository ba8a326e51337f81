package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestOOMKilledScopeGone: under the systemd driver on cgroup v1 (a kind
// node: systemd as PID 1 on a v1 host), systemd removes a container's scope
// as soon as its last process exits, often before peapod reads the
// memory cgroup's oom_kill counter. The test plays systemd: it removes the
// scope's cgroups the moment the OOM-killed container is empty, while the
// daemon is stopped (SIGSTOP) so that it cannot have read the counter
// first, and expects OOMKilled all the same. "after the restart": the
// daemon is killed after the OOM and before the exit (the OOM killed a
// child, the init lives on), the scope goes while it is down, and the
// restarted daemon still reports OOMKilled.
func TestOOMKilledScopeGone(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		t.Skip("cgroup v1 only (memory.oom_control's eventfd); on v2 the memory.events watch is TestSystemdDriver's")
	}
	regAddr, image := testImage(t)
	o := daemonOptions(t, regAddr)
	o.Config += "cgroup_driver = \"systemd\"\n"
	slice := "pdoom" + testenv.RandomSuffix() + ".slice" // top level: /pdoomXXXXXXXX.slice
	o.CgroupParent = slice
	d := &daemon{testenv.NewDaemon(t, o)}
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	hog := "dd if=/dev/zero of=/dev/null bs=64M"
	for i, tc := range []struct {
		name, script string
		restart      bool
		code         int32
		reason       string
	}{
		{"at start", "exec " + hog, false, 137, "OOMKilled"},                 // before the watch is set
		{"while running", "sleep 0.3; exec " + hog, false, 137, "OOMKilled"}, // seen by the watch
		{"after the restart", "sleep 0.3; " + hog + "; sleep 3; exit 3", true, 3, "OOMKilled"},
		// The removal alone signals the eventfd too: not an OOM.
		{"no OOM", "sleep 0.3; exit 0", false, 0, "Completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			podCfg := podConfig("oomscope"+strconv.Itoa(i), t.TempDir())
			run := runPod(t, d, podCfg)
			cfg := containerConfig("hog", image, "sh", "-c", tc.script)
			cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}}
			cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				t.Fatal(err)
			}
			dirs := scopeDirs(t, slice, cr.ContainerId)
			var s *runtimeapi.ContainerStatus
			exited := func() bool {
				s = containerStatus(t, d, cr.ContainerId)
				return s.State == runtimeapi.ContainerState_CONTAINER_EXITED
			}
			if len(dirs) == 0 {
				if !exited() {
					t.Fatalf("no cgroup of %s below %s", cr.ContainerId, slice)
				}
				// The daemon read the counter before anything could go.
				t.Logf("exited before the scope could be removed: %s", s.Reason)
			}
			mem := ""
			for _, dir := range dirs {
				if strings.HasPrefix(dir, "/sys/fs/cgroup/memory/") {
					mem = dir
				}
			}
			if mem == "" && len(dirs) > 0 {
				t.Fatalf("no memory cgroup for %s among %v", cr.ContainerId, dirs)
			}
			pid := d.Cmd.Process.Pid
			if mem == "" {
				// Nothing to remove: checked below.
			} else if tc.restart {
				waitFor(t, 20*time.Second, "the OOM kill", func() bool { return oomKillCount(mem) > 0 })
				// The daemon has seen it when it recorded it (bundle/oom).
				marker := filepath.Join(d.State, "containers", cr.ContainerId, "oom")
				waitFor(t, 10*time.Second, "the daemon to record the OOM", func() bool { _, err := os.Stat(marker); return err == nil })
				d.Kill()
			} else {
				// Stopped, the daemon cannot read the counter before the
				// scope goes; continued whatever happens.
				syscall.Kill(pid, syscall.SIGSTOP)
				defer syscall.Kill(pid, syscall.SIGCONT)
			}
			waitFor(t, 20*time.Second, "the container's exit (after the OOM kill)", func() bool {
				_, err := os.Stat(mem)
				return err != nil || (oomKillCount(mem) > 0 || tc.reason != "OOMKilled") && cgroupEmpty(mem)
			})
			for i := len(dirs) - 1; i >= 0; i-- { // what systemd's GC of the scope does
				if err := syscall.Rmdir(dirs[i]); err != nil && err != syscall.ENOENT {
					t.Fatalf("remove %s as systemd would: %v", dirs[i], err)
				}
			}
			resumed := time.Now()
			if tc.restart && mem != "" {
				d.Start()
			} else {
				syscall.Kill(pid, syscall.SIGCONT)
			}
			waitFor(t, 20*time.Second, "the container to exit", exited)
			t.Logf("exit recorded %s after the daemon resumed", time.Since(resumed).Round(time.Millisecond))
			if s.ExitCode != tc.code || s.Reason != tc.reason {
				t.Errorf("exit %d reason %q, want %d %s", s.ExitCode, s.Reason, tc.code, tc.reason)
			}
			if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// scopeDirs finds the container's cgroup directory in every hierarchy
// below the daemon's top-level slice, parents before children.
func scopeDirs(t *testing.T, slice, id string) []string {
	t.Helper()
	var out []string
	for _, root := range testenv.CgroupDirs("/" + slice) {
		filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() && strings.Contains(e.Name(), id) {
				out = append(out, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return out
}

// oomKillCount reads oom_kill from a v1 memory cgroup's memory.oom_control.
func oomKillCount(dir string) int {
	data, _ := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// cgroupEmpty reports whether no process is left in the cgroup.
func cgroupEmpty(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return err == nil && strings.TrimSpace(string(data)) == ""
}
