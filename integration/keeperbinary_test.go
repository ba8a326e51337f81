package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// keeperPrivateDirtyMaxKiB bounds a keeper's private memory: the static
// musl peapod-pause keeper measured 36 KiB (Private_Dirty of smaps_rollup),
// the same C linked statically with glibc 60–80 KiB (the keeper before
// session 11; PEAPOD_KEEPER_LIBC=glibc builds it, and fails here), the
// keeper run from the dynamic peapod binary 76–136 KiB. The embedded
// keeper's text lies in a memfd (shmem), whose pages count as
// Private_Dirty while one process maps them, though every keeper maps
// them (TestEmbeddedKeeperMemory): keeperPrivateDirtyKiB leaves them out,
// and a second keeper shares the pages both touch.
const keeperPrivateDirtyMaxKiB = 52

// TestKeeperBinary: the keeper embedded in peapod (as make build, make
// install and testenv.BuildPeapod make it) is the static musl peapod-pause:
// every pod's keeper runs from it, statically linked (no dynamic loader,
// no libc.so, no libseccomp mapped) and within keeperPrivateDirtyMaxKiB of
// private memory, and still does its work: namespaces, the container's
// start (the runner), its log and its exit. Without it (peapod built
// without its helpers, nothing beside it), keepers run from the peapod
// binary as before.
func TestKeeperBinary(t *testing.T) {
	regAddr, image := testImage(t)
	dirtyKiB := map[bool]int{} // static → the keeper's Private_Dirty
	for _, tc := range []struct {
		name   string
		static bool
	}{{"the keeper embedded in peapod", true}, {"peapod binary alone", false}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := daemonOptions(t, regAddr)
			if !tc.static {
				// The daemon without embedded helpers and its runner,
				// without peapod-pause.
				dir := t.TempDir()
				for _, f := range []string{"peapod", "peapod-runner"} {
					if out, err := exec.Command("cp", filepath.Join(separateBinaries(t), f), dir).CombinedOutput(); err != nil {
						t.Fatalf("copy %s: %v: %s", f, err, out)
					}
				}
				opts.Binary = filepath.Join(dir, "peapod")
			}
			d := &daemon{testenv.NewDaemon(t, opts)}
			d.Start()
			c := ctx(t)
			if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
				t.Fatal(err)
			}
			logDir := t.TempDir()
			cfg := podConfig("keeperbin", logDir)
			pod := runPod(t, d, cfg).PodSandboxId
			ctr := startContainer(t, d, pod, cfg, containerConfig("echo", image, "sh", "-c", "echo keeper-wrote-this; exec sleep 3600"))
			waitFor(t, 20*time.Second*timeoutScale, "the container's log line", func() bool {
				data, _ := os.ReadFile(filepath.Join(logDir, "echo.log"))
				return strings.Contains(string(data), "stdout F keeper-wrote-this")
			})

			keeper := pausePID(c, d, pod)
			// ps and top show the keeper by name, not by the memfd's fd.
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", keeper)); strings.TrimSpace(string(comm)) != "peapod-pause" {
				t.Errorf("keeper %d is named %q, want peapod-pause", keeper, strings.TrimSpace(string(comm)))
			}
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", keeper))
			if err != nil {
				t.Fatal(err)
			}
			dynamic := strings.Contains(string(maps), "/ld-linux") || strings.Contains(string(maps), "/libc.so")
			if dynamic == tc.static {
				t.Fatalf("keeper %d: dynamic libraries mapped = %v, want %v:\n%s", keeper, dynamic, !tc.static, maps)
			}
			// A second pod: its keeper shares the first's binary pages.
			sibling := runPod(t, d, podConfig("keeperbin-sibling", t.TempDir())).PodSandboxId
			dirty, raw := keeperPrivateDirtyKiB(t, keeper), rollupKiB(t, keeper, "Private_Dirty:")
			if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sibling}); err != nil {
				t.Fatal(err)
			}
			t.Logf("keeper %d: Private_Dirty %d KiB (%d with the memfd's pages)", keeper, dirty, raw)
			dirtyKiB[tc.static] = dirty
			if tc.static {
				if strings.Contains(string(maps), "libseccomp") {
					t.Errorf("the static keeper maps libseccomp:\n%s", maps)
				}
				if dirty > keeperPrivateDirtyMaxKiB {
					t.Errorf("keeper %d: Private_Dirty %d KiB, want at most %d", keeper, dirty, keeperPrivateDirtyMaxKiB)
				}
			}

			// The keeper records the exit.
			if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: ctr, Timeout: 0}); err != nil {
				t.Fatal(err)
			}
			st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
			if err != nil {
				t.Fatal(err)
			}
			if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Status.ExitCode != 137 {
				t.Fatalf("after StopContainer: state %v exit code %d, want EXITED 137", st.Status.State, st.Status.ExitCode)
			}
			if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Measured the same way in one run: the static keeper must cost less.
	// Not by a fixed share: the embedded keeper measured 64–68 KiB against
	// the dynamic one's 76–80 (a memfd's copied-on-write pages weigh a few
	// KiB more than a file's), so an 85% bar failed one run in four; the
	// absolute bar above and TestEmbeddedKeeperMemory's Pss per pod hold
	// the cost itself.
	if st, dyn := dirtyKiB[true], dirtyKiB[false]; st == 0 || dyn == 0 || st >= dyn {
		t.Errorf("keeper Private_Dirty: static %d KiB, from the peapod binary %d KiB: want the static one smaller", st, dyn)
	}
}

// rollupKiB is a field of /proc/PID/smaps_rollup, in KiB.
func rollupKiB(t *testing.T, pid int, key string) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps_rollup %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/smaps_rollup", key, pid)
	return 0
}

// keeperPrivateDirtyKiB is Private_Dirty of keeper pid's mappings, but of a
// mapping of an embedded helper's memfd only its copied-on-write pages
// (at most its Anonymous): the memfd's own pages are dirty shmem that
// counts as private while one process maps them, where the same pages of
// a file count as Private_Clean.
func keeperPrivateDirtyKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	memfd, dirty, anon := false, 0, 0
	flush := func() {
		if memfd {
			total += min(dirty, anon)
		} else {
			total += dirty
		}
		dirty, anon = 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			// A mapping's header: range, perms, offset, dev, inode[, path].
			flush()
			memfd = len(f) >= 6 && strings.HasPrefix(f[5], "/memfd:peapod-")
			continue
		}
		if len(f) >= 2 && (f[0] == "Private_Dirty:" || f[0] == "Anonymous:") {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps %q: %v", line, err)
			}
			if f[0] == "Private_Dirty:" {
				dirty = n
			} else {
				anon = n
			}
		}
	}
	flush()
	return total
}
