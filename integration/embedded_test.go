package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
	"github.com/peapod-cri/peapod/sandbox/runner"
)

// TestEmbeddedHelpers: the peapod binary alone (nothing beside it, as make
// build and make install ship it) runs its pods' keepers and its runners
// from the helpers it embeds, sealed into memfds at start: the keeper is
// the static one, the runner the small one, neither is the daemon's
// binary, and neither memfd can be written. The container works (its log,
// exec through the exec helper). After a restart the new daemon adopts the
// keeper's memfd from the running keeper (new pods share its pages),
// makes a new runner memfd, recovers the pod and starts a container in it
// with the new runner; nothing is left at the end.
func TestEmbeddedHelpers(t *testing.T) {
	regAddr, image := testImage(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "peapod")
	if out, err := exec.Command("cp", peapodBinary, bin).CombinedOutput(); err != nil {
		t.Fatalf("copy peapod: %v: %s", err, out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%s holds %d files, want peapod alone", dir, len(ents))
	}
	opts := daemonOptions(t, regAddr)
	opts.Binary = bin
	opts.Env = []string{"PEAPOD_FAILPOINTS=" + runner.HoldStartFailpoint}
	d := &daemon{testenv.NewDaemon(t, opts)}
	d.Start()
	first := helperSet(t, d, "first start")
	checkSealed(t, d.Cmd.Process.Pid)
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	podCfg := podConfig("embedded", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId

	keeper := pausePID(c, d, pod)
	if got := first.runs(keeper); got != "peapod-pause" {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", keeper))
		t.Fatalf("keeper %d runs %q (exe %s), want the embedded peapod-pause", keeper, got, exe)
	}
	if maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", keeper)); strings.Contains(string(maps), "/ld-linux") || strings.Contains(string(maps), "/libc.so") {
		t.Errorf("the embedded keeper is not the static one:\n%s", maps)
	}

	ctr := startHeld(t, d, pod, podCfg, containerConfig("echo", image, "sh", "-c", "echo embedded-wrote-this; exec sleep 3600"), first)
	waitFor(t, 20*time.Second, "the container's log line", func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "echo.log"))
		return strings.Contains(string(data), "stdout F embedded-wrote-this")
	})
	if out := execOut(t, d, ctr, "echo", "exec-ok"); out != "exec-ok\n" {
		t.Fatalf("exec printed %q", out)
	}
	checkHelperExec(t, d, ctr, 1)

	// Restart: the old daemon's memfds go with it, its keeper keeps its own.
	d.Stop()
	d.Start()
	second := helperSet(t, d, "second start")
	// The keeper's memfd is adopted from the running keeper (one copy for
	// old and new pods); the runner's, which nothing ran from, is new.
	if second.ids["peapod-pause"] != first.ids["peapod-pause"] {
		t.Errorf("the restarted daemon made a new keeper memfd %v instead of adopting its keeper's %v", second.ids["peapod-pause"], first.ids["peapod-pause"])
	}
	if second.ids["peapod-runner"] == first.ids["peapod-runner"] {
		t.Errorf("the restarted daemon holds the old daemon's runner memfd %v", first.ids["peapod-runner"])
	}
	st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("after the restart: pod %v, %v; want READY", st, err)
	}
	if k := pausePID(c, d, pod); k != keeper || first.runs(k) != "peapod-pause" {
		t.Fatalf("after the restart the keeper is %d (was %d), running %q", k, keeper, first.runs(k))
	}
	cs, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after the restart: container %v, %v; want RUNNING", cs, err)
	}
	if out := execOut(t, d, ctr, "echo", "exec-after-restart"); out != "exec-after-restart\n" {
		t.Fatalf("exec after the restart printed %q", out)
	}
	checkHelperExec(t, d, ctr, 2)
	// A new pod's keeper shares the old keeper's pages.
	pod2 := runPod(t, d, podConfig("embedded-after", t.TempDir())).PodSandboxId
	if k2 := pausePID(c, d, pod2); first.runs(k2) != "peapod-pause" {
		t.Errorf("the new pod's keeper %d does not run from the memfd of the old keeper", k2)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod2}); err != nil {
		t.Fatal(err)
	}
	// The old keeper runs the new daemon's runner.
	ctr2 := startHeld(t, d, pod, podCfg, containerConfig("second", image, "sh", "-c", "echo second-wrote-this; exec sleep 3600"), second)
	waitFor(t, 20*time.Second, "the second container's log line", func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "second.log"))
		return strings.Contains(string(data), "stdout F second-wrote-this")
	})
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: ctr2, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	if s, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr2}); err != nil || s.Status.ExitCode != 137 {
		t.Fatalf("after StopContainer: %v, %v; want exit code 137", s, err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	checkNothingLeft(t, d, "after the pod's removal")
}

// TestEmbeddedHelpersUpgrade: a node upgraded from the three binaries
// (peapod, and peapod-runner and peapod-pause beside it) to peapod alone,
// and back. The new daemon recovers the pod whose keeper runs from the old
// peapod-pause file, and that keeper starts a container with the runner of
// the daemon that asks it (its memfd); after the downgrade the keeper of
// the memfd starts one with the runner beside the old binary.
func TestEmbeddedHelpersUpgrade(t *testing.T) {
	regAddr, image := testImage(t)
	opts := daemonOptions(t, regAddr)
	opts.Binary = filepath.Join(separateBinaries(t), "peapod")
	opts.Env = []string{"PEAPOD_FAILPOINTS=" + runner.HoldStartFailpoint}
	d := &daemon{testenv.NewDaemon(t, opts)}
	d.Start()
	if h := testenv.HelperFiles(d.Cmd.Process.Pid); len(h) != 0 {
		t.Fatalf("the daemon built without its helpers holds memfds of %v", h)
	}
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	podCfg := podConfig("upgrade", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	oldKeeper := pausePID(c, d, pod)
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", oldKeeper)); exe != "/peapod-pause" {
		t.Fatalf("keeper of the three binaries runs %s, want the sealed /peapod-pause", exe)
	}

	// Upgrade.
	d.Stop()
	d.Opts.Binary = peapodBinary
	d.Start()
	h := helperSet(t, d, "after the upgrade")
	if k := pausePID(c, d, pod); k != oldKeeper {
		t.Fatalf("after the upgrade the keeper is %d, was %d", k, oldKeeper)
	}
	ctr := startHeld(t, d, pod, podCfg, containerConfig("upgraded", image, "sh", "-c", "echo upgraded-wrote-this; exec sleep 3600"), h)
	waitFor(t, 20*time.Second, "the container's log line", func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "upgraded.log"))
		return strings.Contains(string(data), "stdout F upgraded-wrote-this")
	})
	if out := execOut(t, d, ctr, "echo", "exec-ok"); out != "exec-ok\n" {
		t.Fatalf("exec printed %q", out)
	}
	log2 := t.TempDir()
	pod2Cfg := podConfig("upgrade-new", log2)
	pod2 := runPod(t, d, pod2Cfg).PodSandboxId
	newKeeper := pausePID(c, d, pod2)
	if h.runs(newKeeper) != "peapod-pause" {
		t.Fatalf("the upgraded daemon's new keeper %d does not run from its memfd", newKeeper)
	}

	// Downgrade: the keeper of the memfd runs the runner beside the old binary.
	d.Stop()
	d.Opts.Binary = filepath.Join(separateBinaries(t), "peapod")
	d.Start()
	downCfg := containerConfig("downgraded", image, "sh", "-c", "echo downgraded-wrote-this; exec sleep 3600")
	startContainer(t, d, pod2, pod2Cfg, downCfg)
	waitFor(t, 20*time.Second, "the downgraded container's log line", func() bool {
		data, _ := os.ReadFile(filepath.Join(log2, "downgraded.log"))
		return strings.Contains(string(data), "stdout F downgraded-wrote-this")
	})
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod2}); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	checkNothingLeft(t, d, "after the pods' removal")
}

// checkHelperExec checks that the daemon (at debug level) logged n execs
// in container ctr started by the exec helper, the embedded runner's C,
// and none that fell back to libcontainer.
func checkHelperExec(t *testing.T, d *daemon, ctr string, n int) {
	t.Helper()
	log, _ := os.ReadFile(d.LogPath)
	helper := regexp.MustCompile(`msg="exec through the helper" container=` + ctr)
	fellBack := regexp.MustCompile(`msg="exec(s go)? through libcontainer" container=` + ctr + `.*`)
	if got := len(helper.FindAll(log, -1)); got != n || fellBack.Match(log) {
		t.Fatalf("execs through the helper: %d, want %d; through libcontainer: %q", got, n, fellBack.FindAll(log, -1))
	}
}

// helpers is the memfds of one daemon start, by helper name.
type helpers struct {
	d   *daemon
	ids map[string]testenv.HelperFile
}

// helperSet is the embedded helpers of d's latest start; both must be there.
func helperSet(t *testing.T, d *daemon, what string) helpers {
	t.Helper()
	h := helpers{d: d, ids: map[string]testenv.HelperFile{}}
	for _, f := range testenv.HelperFiles(d.Cmd.Process.Pid) {
		h.ids[f.Name] = f
	}
	for _, name := range []string{"peapod-runner", "peapod-pause"} {
		if _, ok := h.ids[name]; !ok {
			t.Fatalf("%s: the daemon holds no memfd of %s (it holds %v)", what, name, h.ids)
		}
	}
	return h
}

// runs is the name of the helper of h that pid runs from, "" if none.
func (h helpers) runs(pid int) string {
	var st syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st) != nil {
		return ""
	}
	for name, f := range h.ids {
		if f.Dev == st.Dev && f.Ino == st.Ino {
			return name
		}
	}
	return ""
}

// checkSealed checks that the daemon's helper memfds carry the seals
// libcontainer requires to run its init from them, and refuse a write even
// from root.
func checkSealed(t *testing.T, daemonPID int) {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd/", daemonPID)
	ents, _ := os.ReadDir(fdDir)
	n := 0
	for _, e := range ents {
		link, _ := os.Readlink(fdDir + e.Name())
		if !strings.HasPrefix(link, "/memfd:peapod-") {
			continue
		}
		n++
		f, err := os.OpenFile(fdDir+e.Name(), os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("open %s (%s): %v", fdDir+e.Name(), link, err)
		}
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		want := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
		if err != nil || seals&want != want {
			t.Errorf("%s: seals %#x, %v; want %#x", link, seals, err, want)
		}
		if _, err := f.WriteAt([]byte{0}, 0); !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: a write got %v, want EPERM", link, err)
		}
		f.Close()
	}
	if n != 2 {
		t.Errorf("the daemon holds %d helper memfds, want 2", n)
	}
}

// startHeld creates and starts a container whose runner the test holds at
// the hold-start failpoint, checks that the runner runs from h's embedded
// peapod-runner, then releases it and waits for the start.
func startHeld(t *testing.T, d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig, h helpers) string {
	t.Helper()
	release := filepath.Join(d.Dir, "release-"+cfg.Metadata.Name)
	// A held runner outlives its keeper: release it whatever happens.
	t.Cleanup(func() { os.WriteFile(release, nil, 0o644) })
	cfg.Annotations = map[string]string{runner.HoldStartAnnotation: release}
	c := ctx(t)
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		sc, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_, err := d.RT.StartContainer(sc, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
		started <- err
	}()
	var pid int
	waitFor(t, 20*time.Second, "the runner to hold", func() bool { pid = heldRunner(cr.ContainerId); return pid > 0 })
	got := h.runs(pid)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	os.WriteFile(release, nil, 0o644)
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", cfg.Metadata.Name, err)
	}
	if got != "peapod-runner" {
		t.Fatalf("the runner of %s (PID %d) ran %q (exe %s), want this daemon start's embedded peapod-runner", cfg.Metadata.Name, pid, got, exe)
	}
	return cr.ContainerId
}

// heldRunner is the PID of the runner starting container id, 0 if none.
func heldRunner(id string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if args := strings.Split(string(b), "\x00"); len(args) > 4 && args[1] == runner.Command && args[4] == id {
			return pid
		}
	}
	return 0
}

// TestEmbeddedKeeperMemory is the per-pod memory A/B of embedding: 10 pods
// on peapod with its helpers embedded (keepers run from the daemon's
// memfd) against 10 on peapod with peapod-pause beside it (keepers run
// from the file), measured the same way in one run (smaps_rollup of every
// keeper). The keepers of the memfd share its pages as those of the file
// share its page cache: the mean Pss and private memory per keeper must
// not grow by more than 10% (+4 KiB of noise). And an idle keeper of the
// embedded musl peapod-pause costs at most embeddedKeeperPssMaxKiB of Pss.
func TestEmbeddedKeeperMemory(t *testing.T) {
	const pods = 10
	regAddr, _ := testImage(t)
	type mem struct{ pss, private int }
	measured := map[string]mem{}
	for _, tc := range []struct{ name, binary string }{
		{"embedded", peapodBinary},
		{"beside", filepath.Join(separateBinaries(t), "peapod")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := daemonOptions(t, regAddr)
			opts.Binary = tc.binary
			d := &daemon{testenv.NewDaemon(t, opts)}
			d.Start()
			c := ctx(t)
			var keepers []int
			for i := range pods {
				pod := runPod(t, d, podConfig(fmt.Sprintf("mem-%s-%d", tc.name, i), t.TempDir())).PodSandboxId
				keepers = append(keepers, pausePID(c, d, pod))
			}
			exes := map[string]bool{}
			var m mem
			for _, k := range keepers {
				exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", k))
				exes[exe] = true
				m.pss += rollupKiB(t, k, "Pss:")
				m.private += rollupKiB(t, k, "Private_Clean:") + rollupKiB(t, k, "Private_Dirty:")
			}
			if len(exes) != 1 {
				t.Errorf("the keepers run from %d binaries, want 1: %v", len(exes), exes)
			}
			if tc.name == "embedded" && !strings.HasPrefix(firstKey(exes), "/memfd:peapod-pause") {
				t.Errorf("the embedded daemon's keepers run from %v, want its memfd", exes)
			}
			t.Logf("%s: %d keepers from %v: Pss %d KiB (%d per keeper), private %d KiB (%d per keeper)",
				tc.name, pods, firstKey(exes), m.pss, m.pss/pods, m.private, m.private/pods)
			measured[tc.name] = m
		})
	}
	e, b := measured["embedded"], measured["beside"]
	if e.pss == 0 || b.pss == 0 {
		t.Fatalf("not measured: %+v", measured)
	}
	if e.pss/pods > embeddedKeeperPssMaxKiB {
		t.Errorf("an idle embedded keeper costs %d KiB of Pss (of %d pods), want at most %d", e.pss/pods, pods, embeddedKeeperPssMaxKiB)
	}
	if e.pss*100 > b.pss*110+4*pods*100 || e.private*100 > b.private*110+4*pods*100 {
		t.Errorf("embedded keepers cost more: Pss %d KiB and private %d KiB for %d pods, beside the binary %d and %d",
			e.pss, e.private, pods, b.pss, b.private)
	}
}

// embeddedKeeperPssMaxKiB bounds the mean Pss of 10 idle keepers (no
// container; no PID holder) run from the embedded keeper: 21 KiB with
// musl when it was set, 98 with the same C linked statically with glibc
// (PEAPOD_KEEPER_LIBC=glibc, which fails here: its 820 KiB of text weigh
// on each of 10 keepers, musl's 90 KiB do not).
const embeddedKeeperPssMaxKiB = 32

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}
