// Package keeper is the daemon's client of a pod's keeper: the pause
// process, which holds the stdio of the pod's containers, writes their
// logs and records their exits (protocol in sandbox/pause/keeper.c). Each
// request is one connection.
package keeper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Client talks to the keeper listening on Socket.
type Client struct {
	Socket string
}

// ErrGone says the pod's keeper is not running (no socket, refused, or the
// connection closed mid-reply).
var ErrGone = errors.New("the pod's keeper is not running")

// ErrBadRequest says a request field cannot be sent (it holds a NUL, the
// field separator). The CRI layer refuses such strings first.
var ErrBadRequest = errors.New("bad keeper request")

// dial connects and sends one request: NUL-terminated fields, then an empty
// field.
func (k Client) dial(ctx context.Context, fields ...string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", k.Socket)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %v", ErrGone, err)
		}
		return nil, fmt.Errorf("connect to keeper: %w", err)
	}
	conn := c.(*net.UnixConn)
	var b strings.Builder
	for _, f := range fields {
		if strings.IndexByte(f, 0) >= 0 {
			conn.Close()
			return nil, fmt.Errorf("keeper request field %q contains NUL: %w", f, ErrBadRequest)
		}
		b.WriteString(f)
		b.WriteByte(0)
	}
	b.WriteByte(0)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send to keeper: %w", err)
	}
	return conn, nil
}

// readLine reads one reply line byte by byte, so that nothing after it
// (attach frames) is consumed.
func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 64<<10 {
		if _, err := io.ReadFull(r, one); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return "", fmt.Errorf("%w: connection closed", ErrGone)
			}
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errors.New("keeper reply too long")
}

// call sends a request and returns the reply line after "ok".
func (k Client) call(ctx context.Context, fields ...string) (string, error) {
	conn, err := k.dial(ctx, fields...)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	line, err := readLine(conn)
	if err != nil {
		return "", err
	}
	return okReply(line)
}

func okReply(line string) (string, error) {
	switch {
	case line == "ok":
		return "", nil
	case strings.HasPrefix(line, "ok "):
		return line[3:], nil
	case strings.HasPrefix(line, "error "):
		return "", errors.New(line[len("error "):])
	}
	return "", fmt.Errorf("unexpected keeper reply %q", line)
}

// Protocol is the version of the keeper protocol this binary's keeper
// speaks (sandbox/pause/keeper.c). Version 1 added LOGDIR to `start`: the
// keeper opens the log beneath it. Keepers keep running across daemon
// upgrades, so a pod's version is recorded and requests are shaped for it.
const Protocol = 1

// StartRequest is one container to start.
type StartRequest struct {
	ID, ExitFile string
	// The log: its path relative to the pod's log directory, which the
	// keeper opens it beneath (both "": no log).
	LogDir, LogPath       string
	TTY, Stdin, StdinOnce bool
	Argv                  []string // the runner's command line
}

func flag01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Start has the keeper run a container through a runner; it returns the
// PID of the container's init. protocol is the keeper's version: a keeper
// of version 0 (started by an older peapod) takes the log as one absolute
// path and opens it as it always did, until its pod is recreated.
func (k Client) Start(ctx context.Context, protocol int, r StartRequest) (int, error) {
	fields := []string{"start", r.ID, r.LogPath, flag01(r.TTY), flag01(r.Stdin), flag01(r.StdinOnce), r.ExitFile, r.LogDir}
	if protocol < 1 {
		fields[2], fields = "", fields[:7]
		if r.LogPath != "" {
			fields[2] = filepath.Join(r.LogDir, r.LogPath)
		}
	}
	fields = append(fields, r.Argv...)
	rest, err := k.call(ctx, fields...)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(rest)
	if err != nil {
		return 0, fmt.Errorf("keeper start reply %q: %w", rest, err)
	}
	return pid, nil
}

// Exit is an exit as the keeper recorded it.
type Exit struct {
	Code     int32
	Finished int64 // unix nanoseconds
}

// LogState is what the keeper reports about a container's log writes.
type LogState struct {
	Failing bool
	Dropped uint64 // lines lost so far
	Reason  string // why the last write failed (Failing only)
}

// Wait blocks until the container's exit is recorded. onLog, if not nil,
// gets the keeper's reports on the log writes meanwhile.
func (k Client) Wait(ctx context.Context, id string, onLog func(LogState)) (Exit, error) {
	conn, err := k.dial(ctx, "wait", id)
	if err != nil {
		return Exit{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	// Held for the container's whole life, one per running container: a
	// small buffer (the lines are short) instead of bufio's 4 KiB.
	r := bufio.NewReaderSize(conn, 128)
	for {
		line, err := readLine(r)
		if err != nil {
			if ctx.Err() != nil {
				return Exit{}, ctx.Err()
			}
			return Exit{}, err
		}
		if rest, ok := strings.CutPrefix(line, "exited "); ok {
			return parseExit(rest)
		}
		if st, ok := parseLogState(line); ok {
			if onLog != nil {
				onLog(st)
			}
			continue
		}
		_, err = okReply(line)
		if err == nil {
			err = fmt.Errorf("unexpected keeper reply %q", line)
		}
		return Exit{}, err
	}
}

// parseLogState reads "log-error <dropped> <reason>" or "log-ok <dropped>".
func parseLogState(line string) (LogState, bool) {
	if rest, ok := strings.CutPrefix(line, "log-ok "); ok {
		n, err := strconv.ParseUint(rest, 10, 64)
		return LogState{Dropped: n}, err == nil
	}
	if rest, ok := strings.CutPrefix(line, "log-error "); ok {
		num, reason, _ := strings.Cut(rest, " ")
		n, err := strconv.ParseUint(num, 10, 64)
		return LogState{Failing: true, Dropped: n, Reason: reason}, err == nil
	}
	return LogState{}, false
}

// parseExit reads "<code> <finished_unix_nanos>", as in the exit file.
func parseExit(s string) (Exit, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Exit{}, fmt.Errorf("malformed exit record %q", s)
	}
	code, err1 := strconv.ParseInt(f[0], 10, 32)
	finished, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return Exit{}, fmt.Errorf("malformed exit record %q", s)
	}
	return Exit{Code: int32(code), Finished: finished}, nil
}

// ReadExitFile reads an exit the keeper recorded on disk.
func ReadExitFile(path string) (Exit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Exit{}, err
	}
	return parseExit(strings.TrimSpace(string(data)))
}

// Reopen has the keeper reopen the container's log file (after rotation).
func (k Client) Reopen(ctx context.Context, id string) error {
	_, err := k.call(ctx, "reopen", id)
	return err
}

// CloseStdin closes the container's stdin.
func (k Client) CloseStdin(ctx context.Context, id string) error {
	_, err := k.call(ctx, "close-stdin", id)
	return err
}

// Forget drops the keeper's record of the container.
func (k Client) Forget(ctx context.Context, id string) error {
	_, err := k.call(ctx, "forget", id)
	return err
}

// Attach returns a connection that carries the container's output as
// frames: 1 byte stream (1 stdout, 2 stderr), 4 bytes length, data.
func (k Client) Attach(ctx context.Context, id string) (*bufio.Reader, io.Closer, error) {
	conn, err := k.dial(ctx, "attach", id)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	line, err := readLine(conn)
	if err == nil {
		_, err = okReply(line)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return bufio.NewReader(conn), conn, nil
}

// Stdin returns the write end of the container's stdin (with a TTY: the
// terminal), passed by the keeper with SCM_RIGHTS.
func (k Client) Stdin(ctx context.Context, id string) (*os.File, error) {
	conn, err := k.dial(ctx, "stdin", id)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read keeper reply: %w", err)
	}
	if _, err := okReply(strings.TrimSuffix(string(buf[:n]), "\n")); err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("keeper sent no descriptor: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("keeper sent no descriptor: %v", err)
	}
	// The keeper's descriptor is blocking. Non-blocking, the daemon's
	// writes wait in Go's poller rather than each holding an OS thread in
	// write(2) while the container does not read, and closing the file
	// at a session's end ends its pending write. The keeper never writes
	// stdin and reads the terminal once per readiness, so the shared
	// flag changes nothing for it.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("make the container's stdin non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "stdin-"+id), nil
}
