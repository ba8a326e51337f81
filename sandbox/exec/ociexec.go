package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/ociruntime"
	"github.com/peapod-cri/peapod/sandbox/proc"
)

// LoadOCI makes the Target of running container id of the external OCI
// runtime rt: its execs go through `rt exec`, which confines the process
// as the container (namespaces, cgroup, capabilities, seccomp, AppArmor,
// no_new_privs, user), as the runtime itself set them up.
func (e *Executor) LoadOCI(id string, spec *specs.Spec, rt *ociruntime.Runtime) *Target {
	return &Target{spec: spec, oci: rt, ociID: id}
}

// ociExec runs cmd in t's container through the runtime's `exec`. The
// daemon is the runtime's parent and the runtime the process's, which it
// reaps and whose exit status it returns (128+signal for a signal).
func (e *Executor) ociExec(ctx context.Context, t *Target, cmd []string, s Streams) (int32, error) {
	if t.spec.Process == nil {
		return 0, fmt.Errorf("OCI spec has no process")
	}
	for _, a := range cmd {
		if strings.ContainsRune(a, 0) {
			return 0, fmt.Errorf("exec %q: an argument holds a NUL byte: %w", cmd, ErrBadCommand)
		}
	}
	dir, err := os.MkdirTemp("", "peapod-exec-")
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", t.ociID, err)
	}
	defer os.RemoveAll(dir)
	p := *t.spec.Process
	p.Args = cmd
	p.Env = slices.Clone(p.Env)
	p.Terminal = s.TTY
	p.ConsoleSize = nil
	if s.TTY {
		p.Env = oci.WithTERM(p.Env)
	}
	data, err := json.Marshal(&p)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: encode process: %w", t.ociID, err)
	}
	procFile, pidFile, logFile := filepath.Join(dir, "process.json"), filepath.Join(dir, "pid"), filepath.Join(dir, "log")
	if err := os.WriteFile(procFile, data, 0o600); err != nil {
		return 0, fmt.Errorf("exec in %s: %w", t.ociID, err)
	}
	args := append(t.oci.GlobalArgs(logFile), "exec", "--process", procFile, "--pid-file", pidFile)
	if s.TTY {
		args = append(args, "--tty")
	}
	rc := osexec.Command(t.oci.Path, append(args, t.ociID)...)
	var copied <-chan struct{}
	if s.TTY {
		// Without --console-socket the runtime copies between the
		// container's terminal and its own, which must be a terminal:
		// a pty of ours, whose size it passes on at each SIGWINCH.
		term, err := newTerminal()
		if err != nil {
			return 0, fmt.Errorf("exec in %s: %w", t.ociID, err)
		}
		defer term.master.Close()
		rc.Stdin, rc.Stdout, rc.Stderr = term.peer, term.peer, term.peer
		err = rc.Start()
		term.peer.Close()
		if err != nil {
			return 0, fmt.Errorf("exec in %s: run %s: %w", t.ociID, t.oci.Path, err)
		}
		copied = term.copy(s, rc.Process)
	} else {
		// The same pipes as libcontainer's path: *os.File ends, so that
		// the runtime hands them on and nothing waits for a client's stdin.
		var pipes libcontainer.Process
		stdio, err := execStdio(&pipes, s)
		if err != nil {
			return 0, err
		}
		defer stdio.close()
		rc.Stdin, rc.Stdout, rc.Stderr = pipes.Stdin, pipes.Stdout, pipes.Stderr
		if err := rc.Start(); err != nil {
			return 0, fmt.Errorf("exec in %s: run %s: %w", t.ociID, t.oci.Path, err)
		}
		if copied, err = stdio.started(s); err != nil {
			killReap(rc.Process.Pid)
			return 0, err
		}
	}
	done := make(chan error, 1)
	go func() {
		proc.AwaitChildExit(rc.Process.Pid) // the runtime lives as long as the exec
		done <- rc.Wait()
	}()
	select {
	case err := <-done:
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		return ociExitCode(t.ociID, cmd, err, logFile, s)
	case <-ctx.Done():
		// The process is the runtime's child: kill it, and the runtime
		// reaps it and exits; kill the runtime too if it lingers.
		if pid := readPIDFile(pidFile); pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			rc.Process.Kill()
			<-done
		}
		return 0, ctx.Err()
	}
}

// ociExitCode is the exec's exit code, or the runtime's failure to start
// it: a command that cannot be executed gets a shell's 127/126, as on
// libcontainer's path.
func ociExitCode(id string, cmd []string, waitErr error, logFile string, s Streams) (int32, error) {
	if msg := ociruntime.LogError(logFile); msg != "" {
		if code := startFailureCode(errors.New(msg)); code != 0 {
			return code, nil // the runtime wrote the reason on stderr
		}
		return 0, fmt.Errorf("exec %q in container %s: %s", cmd, id, msg)
	}
	if waitErr == nil {
		return 0, nil
	}
	var ee *osexec.ExitError
	if errors.As(waitErr, &ee) {
		if code := ee.ExitCode(); code >= 0 {
			return int32(code), nil
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return exitCode(ws), nil
		}
	}
	return 0, fmt.Errorf("exec %q in container %s: %w", cmd, id, waitErr)
}

func readPIDFile(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// terminal is a pty pair: the runtime's stdio on the peer, the client's
// streams on the master.
type terminal struct{ master, peer *os.File }

func newTerminal() (*terminal, error) {
	// Non-blocking: the session's copies wait in Go's poller, not each in
	// an OS thread, however long the process leaves its terminal unread.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open a terminal: %w", err)
	}
	master := os.NewFile(uintptr(fd), "ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, fmt.Errorf("unlock the terminal: %w", err)
	}
	// The peer by handle (TIOCGPTPEER), not by a /dev/pts path; never
	// the daemon's controlling terminal (O_NOCTTY).
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		master.Close()
		return nil, fmt.Errorf("open the terminal's peer: %w", errno)
	}
	return &terminal{master: master, peer: os.NewFile(uintptr(pfd), "pts")}, nil
}

// copy runs the client's streams over the master until the runtime's
// side closes; resizes are set on the master and signalled to the runtime.
func (t *terminal) copy(s Streams, runtime *os.Process) <-chan struct{} {
	done := make(chan struct{})
	if s.Resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-s.Resize:
					if !ok {
						return
					}
					setWinsize(t.master, sz)
					runtime.Signal(unix.SIGWINCH)
				case <-done:
					return
				}
			}
		}()
	}
	if s.Stdin != nil {
		go io.Copy(t.master, s.Stdin)
	}
	go func() {
		if s.Stdout != nil {
			io.Copy(s.Stdout, t.master) // ends with EIO when the runtime exits
		} else {
			io.Copy(io.Discard, t.master)
		}
		close(done)
	}()
	return done
}
