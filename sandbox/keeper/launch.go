package keeper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peapod-cri/peapod/sandbox/helperbin"
	"github.com/peapod-cri/peapod/sandbox/pause"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/seal"
	"golang.org/x/sys/unix"
)

// The keeper is the pod's pause process (sandbox/pause): this file starts
// it and ends it; client.go talks to it while it runs.

// ErrSetupRefused says the pause reported that the pod's setup (a sysctl,
// the hostname, an ID mapping) cannot be done: bad input, not a failure of
// the host.
var ErrSetupRefused = errors.New("the pause refused the pod's setup")

// readyTimeout bounds how long a new pause may take to report that the
// pod's namespaces are set up (milliseconds normally).
const readyTimeout = 30 * time.Second

// Namespaces is the pod's namespace setup the pause makes, in the pause's
// own terms (the caller derives it from the CRI config).
type Namespaces struct {
	Net, IPC bool   // new network / IPC namespace
	Hostname string // non-empty: a new UTS namespace with this hostname
	PID      bool   // fork a PID holder, PID 1 of a new PID namespace
	Sysctls  map[string]string
	// UIDMap and GIDMap (uid_map lines), when set, put the pod in a new
	// user namespace that the keeper creates itself, with every other
	// namespace below it.
	UIDMap, GIDMap string
}

// Started is a pause that reported ready.
type Started struct {
	PID         int
	Start       uint64 // PID's start time (proc.StartTime)
	HolderPID   int    // the PID namespace holder, 0 without one
	HolderStart uint64
	Exited      <-chan struct{} // closed when the pause has been reaped
}

// args is the pause's command line and the clone flags it is started with.
func (ns Namespaces) args(socket string) ([]string, uintptr) {
	var flags uintptr
	args := []string{"peapod", pause.Command}
	if ns.Net {
		flags |= unix.CLONE_NEWNET
	}
	if ns.IPC {
		flags |= unix.CLONE_NEWIPC
	}
	if ns.Hostname != "" {
		flags |= unix.CLONE_NEWUTS
		args = append(args, "-h", ns.Hostname)
	}
	if ns.PID {
		// The keeper stays in the host PID namespace (it must reap the
		// runners it forks); it forks PID 1 of the pod's namespace.
		args = append(args, "-P")
	}
	for k, v := range ns.Sysctls {
		args = append(args, "-s", k+"="+v)
	}
	if ns.UIDMap != "" || ns.GIDMap != "" {
		// The keeper creates the namespaces itself, below the pod's user
		// namespace (none of them is the host's).
		flags = 0
		args = append(args, "-U", ns.UIDMap, "-G", ns.GIDMap)
	}
	return append(args, "-S", socket), flags
}

// Start starts the pause from the binary at path inside new namespaces,
// serving socket, and waits until it reports that hostname and sysctls
// are set. On error nothing is left running.
func Start(path string, ns Namespaces, socket string) (Started, error) {
	args, flags := ns.args(socket)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return Started{}, fmt.Errorf("pause ready pipe: %w", err)
	}
	defer readyR.Close()
	cmd := &exec.Cmd{
		Path:       path,
		Args:       args,
		Dir:        "/",
		ExtraFiles: []*os.File{readyW}, // pause.ReadyFD
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setpgid:    true, // keep terminal signals meant for the daemon away from pods
		},
	}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return Started{}, fmt.Errorf("start pause: %w", err)
	}
	readyW.Close()
	// The reaper: the exit watcher calls it once the pause exited, so a
	// living pod costs no goroutine and no thread; without a watch (no
	// pidfd), a goroutine blocks in Wait, holding a thread.
	exited := make(chan struct{})
	reap := func() {
		cmd.Wait() // reaps it; the status is not recorded (the reason names the pause)
		close(exited)
	}
	if proc.OnChildExit(cmd.Process.Pid, reap) != nil {
		go reap()
	}
	st, err := awaitReady(readyR, cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return Started{}, err
	}
	st.Exited = exited
	return st, nil
}

// awaitReady reads the pause's report ("ok <holder pid>") and the start
// times that name the pause and its holder from then on.
func awaitReady(readyR *os.File, pid int) (Started, error) {
	// The report ends when the keeper closes its ready fd (or dies). A
	// pause that never reports (wedged in a sysctl write, a namespace
	// setup) is killed at the deadline, so that RunPodSandbox fails and
	// releases the name instead of hanging with it.
	readyR.SetReadDeadline(time.Now().Add(readyTimeout))
	msg, rerr := io.ReadAll(io.LimitReader(readyR, 512))
	got := strings.TrimSpace(string(msg))
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		return Started{}, fmt.Errorf("pause process did not report within %v (reported %q): %w", readyTimeout, got, os.ErrDeadlineExceeded)
	}
	st := Started{PID: pid}
	holder, ok := strings.CutPrefix(got, "ok ")
	if ok {
		var err error
		st.HolderPID, err = strconv.Atoi(holder)
		ok = err == nil
	}
	if !ok {
		if got == "" {
			got = "exited without reporting"
		}
		return Started{}, fmt.Errorf("pause process: %s: %w", got, ErrSetupRefused)
	}
	var err error
	if st.Start, err = proc.StartTime(pid); err != nil {
		return Started{}, fmt.Errorf("read pause start time: %w", err)
	}
	if st.HolderPID > 0 {
		// The holder is the keeper's child, confined and waiting: its PID
		// is not reused while the keeper lives.
		if st.HolderStart, err = proc.StartTime(st.HolderPID); err != nil {
			return Started{}, fmt.Errorf("read the namespace holder's start time: %w", err)
		}
	}
	return st, nil
}

// Kill ends the pause (pid, start) and waits until it is gone: through
// exited if this daemon started it (nil otherwise), else by polling. It
// reports false if it still runs after the wait.
func Kill(pid int, start uint64, exited <-chan struct{}) bool {
	if !proc.Alive(pid, start) {
		return true
	}
	unix.Kill(pid, unix.SIGKILL)
	if exited != nil {
		select {
		case <-exited:
			return true
		case <-time.After(10 * time.Second):
			return false
		}
	}
	// Not our child (the daemon restarted): wait until it disappears.
	deadline := time.Now().Add(10 * time.Second)
	for proc.Alive(pid, start) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// PauseBinary is the name of the keeper's own binary (cmd/peapod-pause):
// the keeper's C alone, linked statically against musl, which the daemon
// runs when it is installed beside the daemon's binary.
const PauseBinary = helperbin.Pause

// Exe is the binary keepers run from: the static keeper the peapod binary
// embeds (the daemon's sealed memfd of it), else peapod-pause beside the
// daemon's binary, else the daemon's own (all hold the keeper's C; the
// small static musl one costs about a fifth of the memory per pod).
func Exe() (string, error) {
	if p := helperbin.Path(helperbin.Pause); p != "" {
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find peapod binary: %w", err)
	}
	p := filepath.Join(filepath.Dir(exe), PauseBinary)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return exe, nil
}

// Binary is the sealed handle of the binary the pauses run from: the
// holder is PID 1 of a shared PID namespace, and a container allowed to
// ptrace it could open /proc/1/exe, which would name and lead to the host's
// peapod binary. Through a read-only overlayfs (as the exec helper) it
// names "/peapod" in a detached mount and cannot be written. Made once;
// the keepers keep the mount alive.
type Binary struct {
	once sync.Once
	file *os.File // the sealed handle, kept open (and from the finalizer)
	path string   // "/proc/<daemon>/fd/N" of file, or the plain path
}

// Path is what Start executes: the sealed handle of exe, made in sealDir
// on the first call. If sealing fails, pauses run from exe itself and the
// first call returns the error as well, for the caller to log.
func (b *Binary) Path(exe, sealDir string) (path string, err error) {
	b.once.Do(func() {
		b.path = exe
		if exe == helperbin.Path(helperbin.Pause) {
			// The embedded keeper: its memfd is sealed already, and named
			// through the daemon's PID, not /proc/self/fd/N, which the
			// child resolves after it has moved its ExtraFiles onto fds
			// 3 and up.
			return
		}
		f, serr := seal.Binary(exe, filepath.Clean(sealDir))
		if serr != nil {
			err = fmt.Errorf("seal %s: %w", exe, serr)
			return
		}
		// Never closed: every later pause is executed through it.
		b.file = f
		b.path = "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(f.Fd()))
	})
	return b.path, err
}
