package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

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

// liveIO is what the daemon holds of a running container's stdio: the
// write end of its stdin (or the terminal), and the attached clients that
// see its output. It lives only in memory.
type liveIO struct {
	mu        sync.Mutex
	stdin     *os.File // nil when the container has no stdin or it was closed
	terminal  *os.File // the pty master when the container has a TTY
	stdinOnce bool
	clients   map[*attachClient]struct{}
	done      bool // output ended: no new clients
}

// attachClient receives output through a bounded queue, so that a slow
// client is dropped rather than blocking the container.
type attachClient struct {
	stdout, stderr io.Writer
	queue          chan outputChunk
	once           sync.Once
}

type outputChunk struct {
	stream string
	data   []byte
}

const attachQueue = 256

func newLiveIO(stdin, terminal *os.File, stdinOnce bool) *liveIO {
	return &liveIO{stdin: stdin, terminal: terminal, stdinOnce: stdinOnce, clients: map[*attachClient]struct{}{}}
}

// streamWriter feeds one output stream of the container to the clients.
func (l *liveIO) streamWriter(stream string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.broadcast(stream, p)
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (l *liveIO) broadcast(stream string, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.clients) == 0 {
		return
	}
	data := append([]byte(nil), p...)
	for c := range l.clients {
		select {
		case c.queue <- outputChunk{stream, data}:
		default:
			// Too slow: drop it rather than hold the container's output.
			delete(l.clients, c)
			c.close()
		}
	}
}

// finish ends every attach session: the container's output has ended.
func (l *liveIO) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	for c := range l.clients {
		delete(l.clients, c)
		c.close()
	}
	if l.stdin != nil {
		l.stdin.Close()
		l.stdin = nil
	}
}

func (c *attachClient) close() { c.once.Do(func() { close(c.queue) }) }

// Attach connects streams to a running container's stdio until the
// container's output ends, the client goes away or ctx ends.
func (r *Runtime) Attach(ctx context.Context, id string, s Streams) error {
	c, err := r.lookupContainer(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running, live := c.State == ContainerRunning, c.live
	c.mu.Unlock()
	if !running {
		return fmt.Errorf("container %s is not running: %w", c.ID, ErrFailedPrecondition)
	}
	if live == nil {
		return fmt.Errorf("container %s was started before peapod restarted; its stdio is not held: %w", c.ID, ErrFailedPrecondition)
	}
	if s.TTY != (live.terminal != nil) {
		return fmt.Errorf("attach with tty=%v to a container with tty=%v: %w", s.TTY, live.terminal != nil, ErrInvalidArgument)
	}
	client := &attachClient{stdout: s.Stdout, stderr: s.Stderr, queue: make(chan outputChunk, attachQueue)}
	live.mu.Lock()
	if live.done {
		live.mu.Unlock()
		return nil
	}
	live.clients[client] = struct{}{}
	live.mu.Unlock()
	defer func() {
		live.mu.Lock()
		delete(live.clients, client)
		live.mu.Unlock()
		client.close()
	}()

	if s.Resize != nil && live.terminal != nil {
		go resizeLoop(ctx, live.terminal, s.Resize)
	}
	if s.Stdin != nil {
		go func() {
			live.mu.Lock()
			in := live.stdin
			live.mu.Unlock()
			if in == nil {
				return
			}
			io.Copy(in, s.Stdin)
			if live.stdinOnce {
				live.mu.Lock()
				if live.stdin != nil && live.terminal == nil {
					live.stdin.Close()
					live.stdin = nil
				}
				live.mu.Unlock()
			}
		}()
	}
	for {
		select {
		case chunk, ok := <-client.queue:
			if !ok {
				return nil
			}
			w := client.stdout
			if chunk.stream == "stderr" && client.stderr != nil {
				w = client.stderr
			}
			if w == nil {
				continue
			}
			if _, err := w.Write(chunk.data); err != nil {
				return nil // client went away
			}
		case <-ctx.Done():
			return nil
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
