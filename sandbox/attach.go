package sandbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// TerminalSize is a terminal's size in characters.
type TerminalSize struct{ Width, Height uint16 }

// Streams are a client's ends of an exec or attach session. Nil members are
// not attached.
type Streams struct {
	Stdin  io.Reader
	Stdout io.WriteCloser
	Stderr io.WriteCloser
	TTY    bool
	Resize <-chan TerminalSize
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
	k := r.keeperOf(&p.Pod)
	frames, conn, err := k.Attach(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", c.ID, err)
	}
	defer conn.Close()

	// stdin (with a TTY: the terminal) comes from the keeper, which keeps
	// its own copy: closing ours does not close the container's stdin.
	if s.Stdin != nil || (tty && s.Resize != nil) {
		in, err := k.Stdin(ctx, c.ID)
		if err == nil {
			defer in.Close()
			if tty && s.Resize != nil {
				go resizeLoop(ctx, in, s.Resize)
			}
			if s.Stdin != nil {
				go func() {
					io.Copy(in, s.Stdin)
					if !tty {
						in.Close() // ours only; a TTY's stays open for resizes
					}
					if stdinOnce {
						k.CloseStdin(context.Background(), c.ID)
					}
				}()
			}
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var header [5]byte
	for {
		if _, err := io.ReadFull(frames, header[:]); err != nil {
			return nil // output ended, or the session was closed
		}
		n := binary.BigEndian.Uint32(header[1:])
		w := s.Stdout
		if header[0] == 2 && s.Stderr != nil {
			w = s.Stderr
		}
		if w == nil {
			if _, err := io.CopyN(io.Discard, frames, int64(n)); err != nil {
				return nil
			}
			continue
		}
		if _, err := io.CopyN(w, frames, int64(n)); err != nil {
			return nil // the client went away
		}
	}
}

// resizeLoop applies terminal size changes until the channel closes.
func resizeLoop(ctx context.Context, terminal *os.File, sizes <-chan TerminalSize) {
	for {
		select {
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			unix.IoctlSetWinsize(int(terminal.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
		case <-ctx.Done():
			return
		}
	}
}
