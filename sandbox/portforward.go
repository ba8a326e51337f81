package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"

	"github.com/vishvananda/netns"
)

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
	ready, nsPath, host := p.State == PodReady, p.netnsPath(), hostNetwork(p.Config)
	p.mu.Unlock()
	if !ready {
		return fmt.Errorf("pod %s is not ready: %w", p.ID, ErrFailedPrecondition)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var conn net.Conn
	if host {
		conn, err = net.Dial("tcp4", addr)
	} else {
		conn, err = dialInNetNS(ctx, nsPath, addr)
	}
	if err != nil {
		return fmt.Errorf("port forward to %s in pod %s: %w", addr, p.ID, err)
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
