package exec

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/peapod-cri/peapod/sandbox/keeper"
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

// Attach connects s to the stdio of container id, which the keeper k
// holds, until the container's output ends, the client goes away or ctx
// ends. tty and stdinOnce are the container's. Several clients may attach
// at once.
func (e *Executor) Attach(ctx context.Context, k keeper.Client, id string, tty, stdinOnce bool, s Streams) error {
	frames, conn, err := k.Attach(ctx, id)
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", id, err)
	}
	defer conn.Close()

	// stdin (with a TTY: the terminal) comes from the keeper, which keeps
	// its own copy: closing ours does not close the container's stdin.
	if s.Stdin != nil || (tty && s.Resize != nil) {
		in, err := k.Stdin(ctx, id)
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
						k.CloseStdin(context.Background(), id)
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
			setWinsize(terminal, sz)
		case <-ctx.Done():
			return
		}
	}
}

// setWinsize sets a terminal's size. Not through terminal.Fd(), which
// makes the descriptor blocking again (for the keeper too, which shares a
// container's terminal).
func setWinsize(terminal *os.File, sz TerminalSize) {
	if rc, err := terminal.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
		})
	}
}

// pollable returns f's descriptor as a non-blocking File, whose reads and
// writes wait in Go's poller rather than each holding an OS thread: a
// terminal master received from libcontainer comes blocking, and a process
// that never reads its terminal would otherwise pin the thread writing to
// it for as long as it lives. f is closed.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("duplicate %s: %w", f.Name(), derr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("make %s non-blocking: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
