package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// maxExecOutput bounds what ExecSync buffers per stream, as a probe that
// prints without end must not exhaust the daemon's memory.
const maxExecOutput = 16 << 20

// ExecSync runs cmd in a running container and returns its output and exit
// code. With a timeout, the process is killed and reaped when it passes and
// ErrDeadlineExceeded is returned.
func (r *Runtime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	if len(cmd) == 0 {
		return nil, nil, 0, fmt.Errorf("exec needs a command: %w", ErrInvalidArgument)
	}
	c, err := r.lookupContainer(id)
	if err != nil {
		return nil, nil, 0, err
	}
	c.mu.Lock()
	running, lc, bundle := c.State == ContainerRunning, c.lc, c.Bundle
	c.mu.Unlock()
	if !running {
		return nil, nil, 0, fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	if lc == nil {
		if lc, err = libcontainer.Load(libcontainerRoot(r.opts.State), c.ID); err != nil {
			return nil, nil, 0, fmt.Errorf("load container %s: %w", c.ID, err)
		}
	}
	spec, err := readSpec(bundle)
	if err != nil {
		return nil, nil, 0, err
	}
	proc, err := newInitProcess(spec)
	if err != nil {
		return nil, nil, 0, err
	}
	proc.Init = false
	proc.Args = cmd
	outBuf, errBuf := &cappedBuffer{max: maxExecOutput}, &cappedBuffer{max: maxExecOutput}
	proc.Stdout, proc.Stderr = outBuf, errBuf
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, 0, err
	}
	defer devnull.Close()
	proc.Stdin = devnull
	if err := lc.Run(proc); err != nil {
		return nil, nil, 0, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}

	type result struct {
		ps  *os.ProcessState
		err error
	}
	done := make(chan result, 1)
	go func() {
		ps, err := proc.Wait()
		done <- result{ps, err}
	}()
	var expire <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expire = t.C
	}
	select {
	case res := <-done:
		if res.ps == nil {
			return nil, nil, 0, fmt.Errorf("wait for exec in %s: %w", c.ID, res.err)
		}
		return outBuf.Bytes(), errBuf.Bytes(), exitCode(res.ps.Sys().(syscall.WaitStatus)), nil
	case <-expire:
		proc.Signal(unix.SIGKILL)
		<-done // reap it: nobody else will promptly (see docs/design.md)
		return nil, nil, 0, fmt.Errorf("command %q in container %s timed out after %s: %w", cmd, c.ID, timeout, ErrDeadlineExceeded)
	case <-ctx.Done():
		proc.Signal(unix.SIGKILL)
		<-done
		return nil, nil, 0, ctx.Err()
	}
}

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
