package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // lets the cgroup manager apply device rules
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/cgroups"
)

// runContainer creates the container with libcontainer and starts its init
// process. The daemon is the parent: it reaps the process and records the
// exit (docs/design.md explains how this moves to a per-pod process).
func (r *Runtime) runContainer(ctx context.Context, c *container) (retErr error) {
	// The image store may have unmounted the root filesystem when the daemon
	// last shut down; mounting again is a no-op when it is mounted.
	if _, err := r.opts.Images.CreateRootfs(ctx, c.ID, c.Image.ID); err != nil {
		return fmt.Errorf("mount root filesystem: %w", err)
	}
	spec, err := readSpec(c.Bundle)
	if err != nil {
		return err
	}
	cfg, err := libcontainerConfig(c.ID, spec)
	if err != nil {
		return err
	}
	root := libcontainerRoot(r.opts.State)
	if stale, err := libcontainer.Load(root, c.ID); err == nil {
		stale.Destroy() // left by a start that failed half-way
	}
	lc, err := libcontainer.Create(root, c.ID, cfg)
	if err != nil {
		return fmt.Errorf("create container state: %w", err)
	}
	defer func() {
		if retErr != nil {
			lc.Destroy()
		}
	}()

	logw, err := openContainerLog(c.LogPath)
	if err != nil {
		return err
	}
	proc, err := newInitProcess(spec)
	if err != nil {
		logw.Close()
		return err
	}
	stdio, err := attachStdio(proc, spec.Process.Terminal, c.Config.GetStdin())
	if err != nil {
		logw.Close()
		return err
	}
	if err := lc.Run(proc); err != nil {
		stdio.closeAll()
		logw.Close()
		return fmt.Errorf("run container process: %w", err)
	}
	stdio.closeChildEnds()
	streams, err := stdio.outputStreams()
	if err != nil {
		proc.Signal(unix.SIGKILL)
		proc.Wait()
		stdio.closeAll()
		logw.Close()
		return err
	}
	pid, err := proc.Pid()
	if err != nil {
		return fmt.Errorf("container pid: %w", err)
	}
	start, err := processStartTime(pid)
	if err != nil {
		// Exited already: the waiter records it; keep start 0.
		start = 0
	}
	c.lc = lc
	c.PID = pid
	c.PIDStart = start
	c.State = ContainerRunning
	c.StartedAt = time.Now().UnixNano()
	c.exited = make(chan struct{})
	live := newLiveIO(stdio.stdinW, stdio.terminal, c.Config.GetStdinOnce())
	c.live = live
	c.log = logw

	copied := make(chan struct{})
	go func() {
		copyLogs(logw, streams, live)
		logw.Close()
		live.finish()
		close(copied)
	}()
	go func() {
		ps, werr := proc.Wait()
		// Let the last lines reach the log before the exit is visible; a
		// child that keeps stdout open must not hold the exit back.
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		r.recordExit(c, ps, werr)
	}()
	return nil
}

// recordExit stores the exit of a container's init process and releases
// its cgroup and libcontainer state.
func (r *Runtime) recordExit(c *container, ps *os.ProcessState, werr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.State = ContainerExited
	c.FinishedAt = time.Now().UnixNano()
	switch {
	case ps != nil:
		c.ExitCode = exitCode(ps.Sys().(syscall.WaitStatus))
		c.Reason = exitReason(c.ExitCode)
		if r.oomKilled(c) {
			c.Reason = "OOMKilled"
		}
	default:
		c.ExitCode = 255
		c.Reason = "Unknown"
		c.Message = fmt.Sprintf("wait for container process: %v", werr)
	}
	r.destroyLibcontainer(c)
	if err := r.saveContainer(&c.Container); err != nil {
		r.log.Error("save container exit", "container", c.ID, "err", err)
	}
	close(c.exited)
	r.log.Info("container exited", "container", c.ID, "exit_code", c.ExitCode)
}

// oomKilled reports whether the OOM killer acted in the container's cgroup.
// Any kill counts, not only of the init process, as kubelet expects.
func (r *Runtime) oomKilled(c *container) bool {
	if c.lc == nil {
		return false
	}
	st, err := c.lc.State()
	if err != nil {
		return false
	}
	n, err := cgroups.OOMKills(st.CgroupPaths)
	if err != nil {
		r.log.Debug("read OOM kill counter", "container", c.ID, "err", err)
		return false
	}
	return n > 0
}

// watchRecovered follows a container that kept running while the daemon
// was down. It is not our child, so its exit status cannot be read.
func (r *Runtime) watchRecovered(c *container) {
	c.exited = make(chan struct{})
	if lc, err := libcontainer.Load(libcontainerRoot(r.opts.State), c.ID); err == nil {
		c.lc = lc
	}
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for processAlive(c.PID, c.PIDStart) {
			select {
			case <-c.quit:
				return
			case <-t.C:
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		r.setLost(c)
		close(c.exited)
	}()
}

// markLost records a container whose process ended while the daemon was down.
func (r *Runtime) markLost(c *container) {
	r.setLost(c)
	c.exited = make(chan struct{})
	close(c.exited)
}

func (r *Runtime) setLost(c *container) {
	c.State = ContainerExited
	c.FinishedAt = time.Now().UnixNano()
	c.ExitCode = 255
	c.Reason = "Unknown"
	c.Message = "the container process ended while peapod was not its parent; its exit code is unknown"
	r.destroyLibcontainer(c)
	if err := r.saveContainer(&c.Container); err != nil {
		r.log.Error("save lost container", "container", c.ID, "err", err)
	}
}

// containerStdio holds both ends of the pipes (or the console socket) given
// to a container's init process.
type containerStdio struct {
	stdinR, stdinW   *os.File
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
	consoleParent    *os.File
	consoleChild     *os.File
	terminal         *os.File // pty master, received from the container
}

func attachStdio(proc *libcontainer.Process, tty, stdin bool) (*containerStdio, error) {
	s := &containerStdio{}
	var err error
	if stdin {
		if s.stdinR, s.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		proc.Stdin = s.stdinR
	}
	if tty {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("console socket: %w", err)
		}
		s.consoleParent = os.NewFile(uintptr(fds[0]), "console-parent")
		s.consoleChild = os.NewFile(uintptr(fds[1]), "console-child")
		proc.ConsoleSocket = s.consoleChild
		return s, nil
	}
	if s.stdoutR, s.stdoutW, err = os.Pipe(); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	if s.stderrR, s.stderrW, err = os.Pipe(); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	proc.Stdout, proc.Stderr = s.stdoutW, s.stderrW
	return s, nil
}

// outputStreams returns what to copy into the log: stdout and stderr, or
// the terminal's master side, received from the container's init.
func (s *containerStdio) outputStreams() ([]logStream, error) {
	if s.consoleParent != nil {
		master, err := utils.RecvFile(s.consoleParent)
		s.consoleParent.Close()
		s.consoleParent = nil
		if err != nil {
			return nil, fmt.Errorf("receive terminal: %w", err)
		}
		s.terminal = master
		if s.stdinW != nil {
			// With a terminal, stdin is the terminal too.
			s.stdinW.Close()
			s.stdinW = master
		}
		return []logStream{{name: "stdout", r: master}}, nil
	}
	return []logStream{{name: "stdout", r: s.stdoutR}, {name: "stderr", r: s.stderrR}}, nil
}

// closeChildEnds closes the descriptors only the container needs.
func (s *containerStdio) closeChildEnds() {
	for _, f := range []**os.File{&s.stdinR, &s.stdoutW, &s.stderrW, &s.consoleChild} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

func (s *containerStdio) closeAll() {
	s.closeChildEnds()
	for _, f := range []*os.File{s.stdinW, s.stdoutR, s.stderrR, s.consoleParent} {
		if f != nil {
			f.Close()
		}
	}
}

type logStream struct {
	name string
	r    io.ReadCloser
}
