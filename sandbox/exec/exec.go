package exec

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	pidproc "github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// Exec runs cmd in the container of t, as Runtime.Exec describes: through
// the C helper when it can (fastexec.go), else through libcontainer's
// setns init.
func (e *Executor) Exec(ctx context.Context, t *Target, cmd []string, s Streams) (int32, error) {
	h := t
	if t.oci != nil {
		return e.ociExec(ctx, t, cmd, s)
	}
	if code, err := e.fastExec(ctx, h, cmd, s); !errors.Is(err, errFallBack) {
		return code, err
	} else if err != errFallBack {
		e.log.Debug("exec through libcontainer", "container", h.lc.ID(), "reason", err)
	}
	proc, err := runner.InitProcess(h.spec)
	if err != nil {
		return 0, err
	}
	proc.Init = false
	proc.Args = cmd
	proc.Env = slices.Clone(proc.Env) // the spec is shared by every exec
	if s.TTY {
		proc.Env = oci.WithTERM(proc.Env)
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
		return 0, fmt.Errorf("exec %q in container %s: %w", cmd, h.lc.ID(), err)
	}
	copied, err := stdio.started(s)
	if err != nil {
		proc.Signal(unix.SIGKILL)
		proc.Wait()
		return 0, err
	}

	type result struct {
		ps  *os.ProcessState
		err error
	}
	done := make(chan result, 1)
	go func() {
		if pid, err := proc.Pid(); err == nil {
			pidproc.AwaitChildExit(pid)
		}
		ps, err := proc.Wait()
		done <- result{ps, err}
	}()
	select {
	case res := <-done:
		// Output written just before the exit must reach the client.
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		if res.ps == nil {
			return 0, fmt.Errorf("wait for exec in %s: %w", h.lc.ID(), res.err)
		}
		return exitCode(res.ps.Sys().(syscall.WaitStatus)), nil
	case <-ctx.Done():
		proc.Signal(unix.SIGKILL)
		<-done // reap it: nobody else will promptly (see docs/design.md)
		return 0, ctx.Err()
	}
}

// startFailureCode maps a runtime's failure to execute the command to the
// exit code a shell gives; 0 for other failures. libcontainer reports it
// as text from the container's init, an external runtime in its log, so
// the text is all there is: libcontainer's and runc's words, and crun's
// ("executable file `X` not found in $PATH: No such file or directory").
func startFailureCode(err error) int32 {
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"),
		strings.Contains(msg, "not found in $path"):
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
		if err == nil {
			master, err = pollable(master)
		}
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

// ExecSync is Exec with the output collected: both streams together
// within maxSyncOutput (syncoutput.go), the rest dropped.
func (e *Executor) ExecSync(ctx context.Context, t *Target, cmd []string) (stdout, stderr []byte, code int32, err error) {
	out := newSyncOutput()
	code, err = e.Exec(ctx, t, cmd, Streams{Stdout: out.stream(0), Stderr: out.stream(1)})
	stdout, stderr = out.take()
	if err != nil {
		return nil, nil, 0, err
	}
	return stdout, stderr, code, nil
}
