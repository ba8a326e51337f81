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

// fightScript ignores SIGTERM everywhere, starts 8 loops in sessions and
// process groups of their own that keep forking, and a fork storm that
// runs into the pids limit; an exec adds a daemonised loop of its own.
// $0 (the marker) is in the command line of every shell it forks.
const fightScript = `trap '' TERM INT HUP
i=0
while [ $i -lt 8 ]; do
	busybox setsid sh -c 'trap "" TERM INT HUP; while :; do sleep 0.3 & wait; ( : & ); done' "$0" &
	i=$((i+1))
done
sh -c 'trap "" TERM; while :; do ( ( : & ) & ) 2>/dev/null; done' "$0" &
echo FIGHT-READY
while :; do sleep 1; done`

// TestEscapeStopFight: a container that fights its stop (SIGTERM ignored,
// loops in new sessions, a fork storm against its pids limit, an exec's
// daemonised child) in a pod with its own, a shared or the host's PID
// namespace. StopContainer with a 2 s grace, and StopPodSandbox for a
// second such container, must end every process of the container's
// cgroups in bounded time, on cgroup v1 too (no cgroup.kill); the pod's
// removal leaves no cgroup and no mount.
func TestEscapeStopFight(t *testing.T) {
	const limit = 64
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte("pids_limit = "+strconv.Itoa(limit)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = []string{"--config", conf}
	d.Start()
	pull(t, d, image)
	for _, shape := range []struct {
		name string
		pid  runtimeapi.NamespaceMode
	}{{"own-pid", runtimeapi.NamespaceMode_CONTAINER}, {"shared-pid", runtimeapi.NamespaceMode_POD}, {"host-pid", runtimeapi.NamespaceMode_NODE}} {
		t.Run(shape.name, func(t *testing.T) {
			logDir := t.TempDir()
			podCfg := podConfig("fight-"+shape.name, logDir)
			ns := &runtimeapi.NamespaceOption{Pid: shape.pid}
			podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}
			pod := runPod(t, d, podCfg).PodSandboxId
			marker := "fightmark-" + randomSuffix()
			var ids []string
			for _, name := range []string{"fighter", "fighter2"} {
				cfg := containerConfig(name, image, "sh", "-c", fightScript, marker)
				cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}}
				id := startContainer(t, d, pod, podCfg, cfg)
				ids = append(ids, id)
				waitFor(t, 30*time.Second, name+" ready", func() bool { return logHas(filepath.Join(logDir, name+".log"), "FIGHT-READY") })
				// An exec that leaves a daemonised loop behind.
				d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 20, Cmd: []string{"sh", "-c",
					`busybox setsid sh -c 'trap "" TERM HUP; while :; do sleep 0.5; done' "$0" </dev/null >/dev/null 2>&1 & echo detached`, marker}})
			}
			time.Sleep(2 * time.Second) // let the storm run into the limit
			for _, id := range ids {
				if n := len(fightProcesses(id, "")); n < 10 {
					t.Fatalf("container %s runs only %d processes: the fight did not start", id, n)
				}
			}

			t0 := time.Now()
			if _, err := d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: ids[0], Timeout: 2}); err != nil {
				t.Fatalf("StopContainer: %v", err)
			}
			stopTook := time.Since(t0)
			// What is left of it once the stop has answered: nothing, or
			// nothing soon (the exit is recorded before the cgroup's rest is killed).
			leftAtReply := len(fightProcesses(ids[0], ""))
			waitFor(t, 20*time.Second, "the stopped container's processes to be gone", func() bool { return len(fightProcesses(ids[0], "")) == 0 })
			t1 := time.Now()
			if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatalf("StopPodSandbox: %v", err)
			}
			podStopTook := time.Since(t1)
			leftAfterPodStop := fightProcesses(ids[1], "")
			waitFor(t, 20*time.Second, "the pod's processes to be gone", func() bool { return len(fightProcesses(ids[1], "")) == 0 })
			t.Logf("%s: StopContainer (2 s grace) %v, %d processes of it left at its reply; StopPodSandbox %v, %d left at its reply",
				shape.name, stopTook.Round(time.Millisecond), leftAtReply, podStopTook.Round(time.Millisecond), len(leftAfterPodStop))
			if stopTook > 30*time.Second*timeoutScale || podStopTook > 30*time.Second*timeoutScale {
				t.Errorf("a stop took %v / %v", stopTook, podStopTook)
			}
			if len(leftAfterPodStop) > 0 {
				t.Errorf("StopPodSandbox answered while %d processes of its container ran: %v", len(leftAfterPodStop), leftAfterPodStop)
			}
			for _, id := range ids {
				if st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id}); err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
					t.Errorf("container %s after the stops: %v %v", id, st.GetStatus().GetState(), err)
				}
			}
			if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatalf("RemovePodSandbox: %v", err)
			}
			if left := fightProcesses("", marker); len(left) > 0 {
				t.Errorf("processes of the fight left on the host: %v", left)
			}
			waitFor(t, 20*time.Second, "the pod's cgroups to be removed", func() bool {
				return len(cgroupChildren(filepath.Join(d.CgroupParent, "peapod-pod-"+pod))) == 0
			})
			if m := mountsUnder(d.Dir); len(m) > 0 {
				for _, p := range m {
					if strings.Contains(p, pod) || strings.Contains(p, ids[0]) || strings.Contains(p, ids[1]) {
						t.Errorf("mount left after the pod's removal: %s", p)
					}
				}
			}
		})
	}
}

// fightProcesses lists the host's processes in a cgroup whose path names
// container id (when id is set) or whose command line holds marker.
func fightProcesses(id, marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if id != "" {
			b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
			if err != nil || !strings.Contains(string(b), "peapod-"+id) {
				continue
			}
		}
		if marker != "" {
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(b), marker) {
				continue
			}
		}
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if f := strings.Fields(string(st)); len(f) > 2 && strings.Contains(string(st), ") Z ") {
			continue // a zombie: it has exited, only its parent's reap is pending
		}
		out = append(out, e.Name())
	}
	return out
}
