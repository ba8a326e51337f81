package exec

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PortForward connects stream to port on the loopback of the network
// namespace at netns ("" for the host's), until either side closes.
func (e *Executor) PortForward(ctx context.Context, netns string, port int32, stream io.ReadWriteCloser) error {
	var err error
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var conn net.Conn
	if netns == "" {
		conn, err = net.Dial("tcp4", addr)
	} else {
		conn, err = dialInNetNS(ctx, netns, addr)
	}
	if err != nil {
		return fmt.Errorf("port forward to %s: %w", addr, err)
	}
	defer conn.Close()
	// Done when the pod side has nothing more to send, when the client
	// stream fails, or when the session ends.
	clientFailed := make(chan struct{})
	go func() {
		if _, err := io.Copy(conn, stream); err != nil {
			close(clientFailed)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite() // the client is done sending; let the server answer
		}
	}()
	podDone := make(chan struct{})
	go func() {
		io.Copy(stream, conn)
		close(podDone)
	}()
	select {
	case <-podDone:
	case <-clientFailed:
	case <-ctx.Done():
	}
	return nil
}

// dialInNetNS opens a TCP connection from inside the network namespace at
// nsPath. Only the socket is made on a thread switched into that namespace
// (a socket stays in the namespace it was made in, whatever thread uses
// it); the connect then waits in Go's poller like any other. A dial that
// waited on the switched thread held that OS thread for the whole connect:
// a pod that drops SYNs (a listener that never accepts is enough) made
// every port-forward stream cost the daemon a thread for two minutes, and
// Go kills a process past 10,000 threads.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("port forward address %q: not IPv4", addr)
	}
	fd, err := socketInNetNS(nsPath)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "port-forward")
	defer f.Close() // FileConn holds a duplicate
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		return nil, os.NewSyscallError("connect", err)
	}
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	if err := awaitConnect(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// socketInNetNS makes a non-blocking TCP socket in the network namespace
// at nsPath, on a thread locked for just that.
func socketInNetNS(nsPath string) (int, error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return -1, fmt.Errorf("open network namespace: %w", err)
	}
	defer target.Close()
	type result struct {
		fd  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			res <- result{-1, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if netns.Set(orig) == nil {
			// Only a thread back in the daemon's namespace may serve others;
			// otherwise it stays locked and exits with this goroutine.
			runtime.UnlockOSThread()
		}
		if err != nil {
			err = os.NewSyscallError("socket", err)
		}
		res <- result{fd, err}
	}()
	r := <-res
	return r.fd, r.err
}

// awaitConnect waits in the poller until conn's non-blocking connect has
// ended, or ctx has, and returns the connect's error.
func awaitConnect(ctx context.Context, conn net.Conn) error {
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Now()) })
	defer stop()
	var connErr error
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			connErr = os.NewSyscallError("getsockopt", err)
		case v != 0:
			connErr = os.NewSyscallError("connect", syscall.Errno(v))
		default:
			if _, err := unix.Getpeername(int(fd)); err == unix.ENOTCONN {
				return false // still connecting: wait until writable
			}
		}
		return true
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if connErr == nil {
		conn.SetWriteDeadline(time.Time{})
	}
	return connErr
}
