package exec

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"

	"github.com/vishvananda/netns"
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
// nsPath. The socket is created on a thread switched into that namespace;
// once created, it stays in it wherever it is used.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer target.Close()
	type result struct {
		conn net.Conn
		err  error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{nil, err}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			res <- result{nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp4", addr)
		if netns.Set(orig) == nil {
			// Only a thread back in the daemon's namespace may serve others;
			// otherwise it stays locked and exits with this goroutine.
			runtime.UnlockOSThread()
		}
		res <- result{conn, err}
	}()
	r := <-res
	return r.conn, r.err
}
