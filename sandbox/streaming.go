package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"io"
	"time"

	"github.com/peapod-cri/peapod/sandbox/exec"
)

// The lifecycle's side of exec, attach and port-forward: find the
// container or pod, check its state, and hand the session to the
// Executor (package sandbox/exec).

// TerminalSize is a terminal's size in characters.
type TerminalSize = exec.TerminalSize

// Streams are a client's ends of an exec or attach session. Nil members are
// not attached.
type Streams = exec.Streams

// ExecSync runs cmd in a running container and returns its output and exit
// code. With a timeout, the process is killed and reaped when it passes and
// ErrDeadlineExceeded is returned.
func (r *Runtime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	t, err := r.execTarget(id, cmd)
	if err != nil {
		return nil, nil, 0, err
	}
	stdout, stderr, code, err = r.exec.ExecSync(ctx, t, cmd)
	if errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
		return nil, nil, 0, fmt.Errorf("command %q in container %s timed out after %s: %w", cmd, id, timeout, ErrDeadlineExceeded)
	}
	return stdout, stderr, code, execError(err)
}

// Exec runs cmd in a running container with the given streams, in all the
// container's namespaces and its cgroup, as its user with its environment.
// It returns the exit code. When ctx ends first, the process is killed and
// reaped, and ctx's error is returned.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, s Streams) (int32, error) {
	t, err := r.execTarget(id, cmd)
	if err != nil {
		return 0, err
	}
	code, err := r.exec.Exec(ctx, t, cmd, s)
	return code, execError(err)
}

// execTarget finds the running container an exec of cmd goes to.
func (r *Runtime) execTarget(id string, cmd []string) (*exec.Target, error) {
	if len(cmd) == 0 {
		return nil, fmt.Errorf("exec needs a command: %w", ErrInvalidArgument)
	}
	c, err := r.lookupContainer(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.State != ContainerRunning {
		return nil, fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	return r.execTargetOf(c)
}

// execError makes a command the container cannot run an invalid argument.
func execError(err error) error {
	if errors.Is(err, exec.ErrBadCommand) {
		return fmt.Errorf("%w: %w", err, ErrInvalidArgument)
	}
	return err
}

// execTargetOf returns the container's exec target, made on first use.
// The caller holds c.mu.
func (r *Runtime) execTargetOf(c *container) (*exec.Target, error) {
	if c.exec != nil {
		return c.exec, nil
	}
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil {
		return nil, err
	}
	if rt := r.ociOfContainer(c); rt != nil {
		c.exec = r.exec.LoadOCI(c.ID, spec, rt)
		return c.exec, nil
	}
	t, err := r.exec.Load(c.ID, spec)
	if err != nil {
		return nil, err
	}
	c.exec = t
	return t, nil
}

// Attach connects streams to a running container's stdio, which its pod's
// keeper holds, until the container's output ends, the client goes away or
// ctx ends. Several clients may attach at once.
func (r *Runtime) Attach(ctx context.Context, id string, s Streams) error {
	c, err := r.lookupContainer(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running, podID, tty, stdinOnce := c.State == ContainerRunning, c.PodID, c.Config.GetTty(), c.Config.GetStdinOnce()
	c.mu.Unlock()
	if !running {
		return fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	if s.TTY != tty {
		return fmt.Errorf("attach with tty=%v to a container with tty=%v: %w", s.TTY, tty, ErrInvalidArgument)
	}
	p, err := r.lookupPod(podID)
	if err != nil {
		return err
	}
	return r.exec.Attach(ctx, r.keeperOf(&p.Pod), c.ID, tty, stdinOnce, s)
}

// PortForward connects stream to port on the pod's loopback, inside the
// pod's network namespace, until either side closes.
func (r *Runtime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d is out of range: %w", port, ErrInvalidArgument)
	}
	p, err := r.lookupPod(podID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.refresh()
	ready, nsPath := p.State == PodReady, p.netnsPath()
	if oci.HostNetwork(p.Config) {
		nsPath = ""
	}
	p.mu.Unlock()
	if !ready {
		return fmt.Errorf("pod %s is not ready: %w", p.ID, ErrFailedPrecondition)
	}
	if err := r.exec.PortForward(ctx, nsPath, port, stream); err != nil {
		return fmt.Errorf("pod %s: %w", p.ID, err)
	}
	return nil
}

// ReopenLog has the keeper reopen a running container's log file after
// the kubelet rotated it.
func (r *Runtime) ReopenLog(ctx context.Context, id string) error {
	c, err := r.lookupContainer(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running, podID := c.State == ContainerRunning, c.PodID
	c.mu.Unlock()
	if !running {
		return fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	p, err := r.lookupPod(podID)
	if err != nil {
		return err
	}
	if err := r.keeperOf(&p.Pod).Reopen(ctx, c.ID); err != nil {
		return fmt.Errorf("reopen log of container %s: %w", c.ID, err)
	}
	return nil
}
