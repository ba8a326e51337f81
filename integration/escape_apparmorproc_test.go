package integration

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeExecAppArmorProc: with an AppArmor profile, the exec helper's
// exec process writes its own exec attribute through a procfs it holds
// until its execve. That procfs was the host's /proc (an O_PATH
// descriptor the helper opened before joining the container), which a
// container granted CAP_SYS_PTRACE in a shared-PID pod reached through
// /proc/<exec>/fd/N, and through its 1/root the host's root. The attacker
// (AppArmor unconfined, as the exec process is until its execve) seizes
// the execs of a sibling container confined by peapod-default as early as
// it can (TestEscapeExecPtraceRace's /bin/race) and follows every procfs
// descriptor to its 1/root: none may be the host's root. The procfs is now
// a private one of the pod's PID namespace, whose PID 1 is the holder.
func TestEscapeExecAppArmorProc(t *testing.T) {
	if !appArmorEnabled() {
		t.Skip("no AppArmor in this kernel: the exec process holds a procfs only to set a profile (run in the qemu guest: docs/security.md)")
	}
	d, image, _ := hostPayloadDaemon(t)
	podCfg := podConfig("aaproc", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	pod := runPod(t, d, podCfg).PodSandboxId
	attacker := capsContainer("race", image, podCfg, "SYS_PTRACE")
	attacker.Command = nil // the image's: the payload, which stays
	attacker.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	race := startContainer(t, d, pod, podCfg, attacker)
	victimCfg := containerConfig("victim", image)
	victimCfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions,
		Apparmor:         &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
	}}
	victim := startContainer(t, d, pod, podCfg, victimCfg)
	hostRoot := statID(t, "/proc/1/root")

	stop := make(chan struct{})
	execs := make(chan int, 1)
	go func() {
		n := 0
		defer func() { execs <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: victim, Cmd: []string{"/bin/race", "0"}, Timeout: 60})
			n++
		}
	}()
	// Rounds until exec processes were caught holding their procfs: the
	// race is timing, and a run that caught none would prove nothing.
	held, rounds := 0, 0
	var escaped []string
	deadline := time.Now().Add(3 * time.Minute * timeoutScale)
	for held < 3 && time.Now().Before(deadline) {
		rounds++
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: race, Cmd: []string{"/bin/race", "10"}, Timeout: 50})
		if err != nil {
			close(stop)
			<-execs
			t.Fatal(err)
		}
		out := string(r.Stdout) + string(r.Stderr)
		if !strings.Contains(out, "done caught=") {
			close(stop)
			<-execs
			t.Fatalf("the race did not finish: %s", out)
		}
		caughtExec := false // the process being read is an exec process before its execve
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "CAUGHT ") {
				caughtExec = strings.Contains(line, "exe=/memfd:peapod") || strings.Contains(line, "exe=/peapod")
				continue
			}
			_, root, ok := strings.Cut(line, " PROCROOT1 ")
			if !ok {
				continue
			}
			if root == hostRoot {
				escaped = append(escaped, strings.TrimSpace(line))
			}
			if caughtExec {
				held++
				if held <= 3 {
					t.Logf("round %d, a caught exec process: %s", rounds, strings.TrimSpace(line))
				}
			}
		}
		t.Logf("round %d: %s", rounds, grepLines(out, "done caught="))
	}
	close(stop)
	n := <-execs
	t.Logf("%d execs raced in %d rounds; %d procfs descriptors of exec processes followed", n, rounds, held)
	if len(escaped) > 0 {
		t.Errorf("%d descriptors of exec processes lead to the host's root (%s) through their procfs's 1/root, the first: %s", len(escaped), hostRoot, escaped[0])
	}
	if held == 0 {
		t.Fatalf("no exec process was caught holding its procfs in %d rounds: the test proves nothing", rounds)
	}
	// They were the helper's exec processes (libcontainer's init, which
	// runs from the same binary, makes a private procfs of its own).
	logData, _ := os.ReadFile(d.LogPath)
	if log := string(logData); !strings.Contains(log, `"exec through the helper" container=`+victim) || strings.Contains(log, "private procfs unavailable") {
		t.Errorf("the victim's execs did not all go through the helper:\n%s", grepLines(log, "procfs"))
	}
	// The execs still run (under the profile: TestExecPathsAgree).
	if out := execOut(t, d, victim, "/bin/race", "0"); !strings.Contains(out, "done caught=0") {
		t.Errorf("an exec after the race printed %q", out)
	}
}

// statID is the device and inode a path resolves to, as the race prints
// them ("%lx:%lu").
func statID(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x:%d", st.Dev, st.Ino)
}

// TestExecAppArmorWithoutPrivateProcfs: a daemon whose exec helper cannot
// mount a private procfs (here a seccomp filter on the daemon fails fsopen
// with ENOSYS, as an engine's filter or a user namespace may refuse it)
// runs execs with an AppArmor profile through libcontainer, as runc does,
// says so once in its log, and never sets the profile through another
// /proc: the exec runs under the container's profile.
func TestExecAppArmorWithoutPrivateProcfs(t *testing.T) {
	if !appArmorEnabled() {
		t.Skip("no AppArmor in this kernel: the exec process mounts a procfs only to set a profile (run in the qemu guest: docs/security.md)")
	}
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	startWithoutFsopen(t, d)
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("aanoproc", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("confined", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
	}}
	ctr := startContainer(t, d, pod, podCfg, cfg)
	for i := 0; i < 2; i++ {
		if out := execOut(t, d, ctr, "cat", "/proc/self/attr/current"); strings.TrimSpace(out) != "peapod-default (enforce)" {
			t.Errorf("exec %d runs under %q, want peapod-default (enforce)", i, out)
		}
	}
	logData, _ := os.ReadFile(d.LogPath)
	const warn = "execs with an AppArmor profile go through libcontainer"
	if c := strings.Count(string(logData), warn); c != 1 {
		t.Errorf("the daemon's log says %q %d times, want once:\n%s", warn, c, grepLines(string(logData), "procfs"))
	}
}

// startWithoutFsopen starts d under a seccomp filter that fails fsopen
// with ENOSYS, installed on a locked thread that starts the daemon: the
// test's other threads stay unfiltered. The thread lives until the test's
// cleanup: a thread's exit is its children's parent death, and the test
// registry, started with Pdeathsig from whatever thread ran the test then,
// died with it once.
func startWithoutFsopen(t *testing.T, d *daemon) {
	t.Helper()
	started := make(chan error, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_FSOPEN, Jt: 0, Jf: 1},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
			started <- err
			<-release
			return
		}
		defer func() { // also when Start fails the test (runtime.Goexit)
			started <- nil
			<-release
		}()
		d.Start()
	}()
	if err := <-started; err != nil {
		t.Fatalf("seccomp filter: %v", err)
	}
	if d.Cmd == nil || d.Cmd.Process == nil {
		t.Fatal("the daemon did not start")
	}
	t.Logf("daemon %s started without fsopen", strconv.Itoa(d.Cmd.Process.Pid))
}
