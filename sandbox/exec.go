package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// maxExecOutput bounds what ExecSync buffers per stream, as a probe that
// prints without end must not exhaust the daemon's memory.
const maxExecOutput = 16 << 20

// ExecSync runs cmd in a running container and returns its output and exit
// code. With a timeout, the process is killed and reaped when it passes and
// ErrDeadlineExceeded is returned.
func (r *Runtime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	outBuf, errBuf := &cappedBuffer{max: maxExecOutput}, &cappedBuffer{max: maxExecOutput}
	code, err = r.Exec(ctx, id, cmd, Streams{Stdout: nopCloser{outBuf}, Stderr: nopCloser{errBuf}})
	if errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
		return nil, nil, 0, fmt.Errorf("command %q in container %s timed out after %s: %w", cmd, id, timeout, ErrDeadlineExceeded)
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return outBuf.Bytes(), errBuf.Bytes(), code, nil
}

// Exec runs cmd in a running container with the given streams, in all the
// container's namespaces and its cgroup, as its user with its environment.
// It returns the exit code. When ctx ends first, the process is killed and
// reaped, and ctx's error is returned.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, s Streams) (int32, error) {
	if len(cmd) == 0 {
		return 0, fmt.Errorf("exec needs a command: %w", ErrInvalidArgument)
	}
	c, err := r.lookupContainer(id)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.State != ContainerRunning {
		c.mu.Unlock()
		return 0, fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	h, err := r.execHandleOf(c)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	proc, err := newInitProcess(h.spec)
	if err != nil {
		return 0, err
	}
	proc.Init = false
	proc.Args = cmd
	proc.Env = slices.Clone(proc.Env) // the spec is shared by every exec
	if h.cgList != nil {
		proc.ExtraFiles = []*os.File{h.cgList} // fd 3: see package execcg
	}

	stdio, err := execStdio(proc, s)
	if err != nil {
		return 0, err
	}
	defer stdio.close()
	if err := h.lc.Run(proc); err != nil {
		// A command that cannot be executed gets a shell's exit codes, 127
		// (not found) and 126 (not executable), and the reason on stderr,
		// so probes and kubectl exec read it as users expect.
		if code := startFailureCode(err); code != 0 {
			if s.Stderr != nil {
				fmt.Fprintf(s.Stderr, "%v\n", err)
			}
			return code, nil
		}
		return 0, fmt.Errorf("exec %q in container %s: %w", cmd, c.ID, err)
	}
	copied, err := stdio.started(s)
	if err != nil {
		proc.Signal(unix.SIGKILL)
		proc.Wait()
		return 0, err
	}

	pid, err := proc.Pid()
	if err != nil {
		proc.Signal(unix.SIGKILL)
		proc.Wait()
		return 0, fmt.Errorf("exec in %s: %w", c.ID, err)
	}
	joined := r.joinUnified(h, pid)

	type result struct {
		ws  syscall.WaitStatus
		err error
	}
	exited := make(chan result, 1) // the exit status, known before the reap
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		ws, werr := waitNoReap(pid)
		if werr == nil {
			exited <- result{ws: ws}
		}
		<-joined // the PID stays ours until the join has written it
		ps, err := proc.Wait()
		if werr != nil {
			if ps == nil {
				exited <- result{err: err}
			} else {
				exited <- result{ws: ps.Sys().(syscall.WaitStatus)}
			}
		}
	}()
	select {
	case res := <-exited:
		// Output written just before the exit must reach the client.
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		if res.err != nil {
			return 0, fmt.Errorf("wait for exec in %s: %w", c.ID, res.err)
		}
		return exitCode(res.ws), nil
	case <-ctx.Done():
		proc.Signal(unix.SIGKILL)
		<-reaped // reap it: nobody else will promptly (see docs/design.md)
		return 0, ctx.Err()
	}
}

// joinUnified moves the exec'd process into the container's cgroup of a
// hybrid host's v2 hierarchy, off the exec's critical path: a PID write to
// cgroup.procs waits for an RCU grace period (package execcg). The returned
// channel closes when done; until then the process must not be reaped.
func (r *Runtime) joinUnified(h *execHandle, pid int) <-chan struct{} {
	done := make(chan struct{})
	if h.unified == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		// ESRCH: it exited (a zombie cannot move), which is no failure.
		if err := cgroups.WriteCgroupProc(h.unified, pid); err != nil && !errors.Is(err, unix.ESRCH) {
			r.log.Warn("move exec process into the container's unified cgroup", "pid", pid, "cgroup", h.unified, "err", err)
		}
	}()
	return done
}

// waitNoReap blocks until the child pid exits and returns its wait status,
// leaving it a zombie (WNOWAIT), so that its PID is not reused yet.
func waitNoReap(pid int) (syscall.WaitStatus, error) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	// siginfo_t for SIGCHLD: si_pid, si_uid, si_status follow the three
	// ints (and, on 64-bit, the padding that aligns the union).
	off := uintptr(12)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	status := *(*int32)(unsafe.Add(unsafe.Pointer(&info), off+8))
	switch info.Code {
	case 1: // CLD_EXITED
		return syscall.WaitStatus(status&0xff) << 8, nil
	case 2: // CLD_KILLED
		return syscall.WaitStatus(status & 0x7f), nil
	case 3: // CLD_DUMPED
		return syscall.WaitStatus(status&0x7f | 0x80), nil
	}
	return 0, fmt.Errorf("waitid: unexpected child state %d", info.Code)
}

// startFailureCode maps libcontainer's failure to execute the command to
// the exit code a shell gives; 0 for other failures. libcontainer reports
// it as text from the container's init, so the text is all there is.
func startFailureCode(err error) int32 {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return 127
	case strings.Contains(msg, "permission denied"):
		return 126
	}
	return 0
}

// execIO holds the daemon's ends of an exec process's stdio.
type execIO struct {
	files   []*os.File // closed when the exec ends
	console *os.File   // parent end of the console socket (TTY)
	child   []*os.File // the process's ends, closed after start
	outs    []pipeCopy
	stdin   *os.File // write end of the process's stdin pipe
}

type pipeCopy struct {
	r *os.File
	w io.Writer
}

func execStdio(proc *libcontainer.Process, s Streams) (*execIO, error) {
	e := &execIO{}
	if s.TTY {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		e.console = os.NewFile(uintptr(fds[0]), "console-parent")
		child := os.NewFile(uintptr(fds[1]), "console-child")
		e.files = append(e.files, e.console)
		e.child = append(e.child, child)
		proc.ConsoleSocket = child
		return e, nil
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	e.files = append(e.files, devnull)
	proc.Stdin = devnull
	if s.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			e.close()
			return nil, err
		}
		e.child, e.stdin = append(e.child, r), w
		e.files = append(e.files, w)
		proc.Stdin = r
	}
	for _, out := range []struct {
		w   io.Writer
		dst *io.Writer
	}{{s.Stdout, &proc.Stdout}, {s.Stderr, &proc.Stderr}} {
		if out.w == nil {
			*out.dst = devnull
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			e.close()
			return nil, err
		}
		e.child = append(e.child, w)
		e.files = append(e.files, r)
		e.outs = append(e.outs, pipeCopy{r, out.w})
		*out.dst = w
	}
	return e, nil
}

// started runs after the process started: it closes the process's ends and
// starts copying. The returned channel closes when all output is copied.
func (e *execIO) started(s Streams) (<-chan struct{}, error) {
	for _, f := range e.child {
		f.Close()
	}
	e.child = nil
	copied := make(chan struct{})
	if e.console != nil {
		master, err := utils.RecvFile(e.console)
		if err != nil {
			close(copied)
			return copied, fmt.Errorf("receive exec terminal: %w", err)
		}
		e.files = append(e.files, master)
		if s.Resize != nil {
			go resizeLoop(context.Background(), master, s.Resize)
		}
		if s.Stdin != nil {
			go io.Copy(master, s.Stdin)
		}
		go func() {
			if s.Stdout != nil {
				io.Copy(s.Stdout, master) // ends with EIO when the terminal's last user exits
			}
			close(copied)
		}()
		return copied, nil
	}
	if e.stdin != nil {
		go func() {
			io.Copy(e.stdin, s.Stdin)
			e.stdin.Close() // the client's EOF is the process's EOF
		}()
	}
	remaining := make(chan struct{}, len(e.outs))
	for _, pc := range e.outs {
		go func() {
			io.Copy(pc.w, pc.r)
			remaining <- struct{}{}
		}()
	}
	go func() {
		for range e.outs {
			<-remaining
		}
		close(copied)
	}()
	return copied, nil
}

func (e *execIO) close() {
	for _, f := range append(e.child, e.files...) {
		f.Close()
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// cappedBuffer keeps the first max bytes written and drops the rest.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
