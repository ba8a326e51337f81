package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// orphanScript makes 2,000 orphans in two loops: each `( true & )` is a
// subshell that forks a background child and exits at once, so the child
// is re-parented to whoever reaps the container's orphans.
const orphanScript = `for l in 1 2; do
	(i=0; while [ $i -lt 1000 ]; do ( true & ); i=$((i+1)); done) &
done
wait
echo ORPHANS-DONE
sleep 1000`

// TestEscapeOrphanFlood: a container's orphans go to PID 1 of its PID
// namespace: the pod's PID holder in a shared-PID pod, and in a hostPID
// pod (no PID namespace of the pod's own) to the nearest subreaper, the
// pod's keeper. Each must reap them as they come: 2,000 orphans leave no
// zombie behind, the reaper's memory does not grow with them, and the
// pod's other containers still start, log and exit meanwhile.
func TestEscapeOrphanFlood(t *testing.T) {
	d, image := readyDaemon(t)
	for _, shape := range []struct {
		name string
		pid  runtimeapi.NamespaceMode
	}{{"shared-pid", runtimeapi.NamespaceMode_POD}, {"host-pid", runtimeapi.NamespaceMode_NODE}} {
		t.Run(shape.name, func(t *testing.T) {
			logDir := t.TempDir()
			podCfg := podConfig("orphans-"+shape.name, logDir)
			podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: shape.pid}}
			pod := runPod(t, d, podCfg).PodSandboxId
			keeper, holder, _ := podProcs(t, d, pod)
			reaper := holder
			if shape.pid == runtimeapi.NamespaceMode_NODE {
				reaper = keeper
			}
			if reaper <= 0 {
				t.Fatalf("no reaper PID (keeper %d, holder %d)", keeper, holder)
			}
			baseRSS := statusKB(t, reaper, "VmRSS")
			cfg := containerConfig("orphans", image, "sh", "-c", orphanScript)
			cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
			startContainer(t, d, pod, podCfg, cfg)

			// Meanwhile the pod's other containers start, log and exit.
			peakZombies := 0
			deadline := time.Now().Add(50 * time.Second * timeoutScale)
			for i := 0; !logHas(filepath.Join(logDir, "orphans.log"), "ORPHANS-DONE"); i++ {
				name := fmt.Sprintf("sibling%d", i)
				sib := containerConfig(name, image, "sh", "-c", "echo SIBLING-UP")
				sib.Linux = cfg.Linux
				id := startContainer(t, d, pod, podCfg, sib)
				waitFor(t, 30*time.Second, name+" to exit", func() bool {
					st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
					return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
				})
				if !logHas(filepath.Join(logDir, name+".log"), "SIBLING-UP") {
					t.Errorf("%s's line is not in its log", name)
				}
				peakZombies = max(peakZombies, zombiesOf(reaper))
				if time.Now().After(deadline) {
					t.Fatal("the orphan loops did not end in 50 s")
				}
			}
			// What is left once the orphans stopped coming: nothing.
			waitFor(t, 10*time.Second, "no zombie left to the reaper", func() bool { return zombiesOf(reaper) == 0 })
			rss := statusKB(t, reaper, "VmRSS")
			t.Logf("%s: reaper %d, resident %d KiB before, %d KiB after 2,000 orphans; at most %d zombies seen at once",
				shape.name, reaper, baseRSS, rss, peakZombies)
			if rss > baseRSS+256 {
				t.Errorf("the reaper grew from %d KiB to %d KiB", baseRSS, rss)
			}
		})
	}
}

// zombiesOf counts the zombies whose parent is pid.
func zombiesOf(pid int) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		rest := s[strings.LastIndexByte(s, ')')+1:]
		f := strings.Fields(rest)
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			n++
		}
	}
	return n
}
