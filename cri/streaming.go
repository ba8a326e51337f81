package cri

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/peapod-cri/peapod/metrics"
	"github.com/peapod-cri/peapod/sandbox"
)

// StreamServer serves exec, attach and port-forward sessions to the kubelet
// and kubectl over SPDY and WebSocket (k8s.io/cri-streaming). The URLs the
// CRI calls return hold single-use tokens that expire.
type StreamServer struct {
	server   streaming.Server
	listener net.Listener
	http     *http.Server
	metrics  *atomic.Pointer[metrics.Metrics] // shared with the streamRuntime
}

// NewStreamServer listens on addr ("127.0.0.1:0" for a random port) and
// serves sessions against rt, over TLS when certFile and keyFile are set.
func NewStreamServer(addr, certFile, keyFile string, rt *sandbox.Runtime, log *slog.Logger) (*StreamServer, error) {
	var tlsConfig *tls.Config
	scheme := "http"
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("streaming server: load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: listen on %s: %w", addr, err)
	}
	if tlsConfig != nil {
		lis = tls.NewListener(lis, tlsConfig)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = lis.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: scheme, Host: lis.Addr().String()}
	m := &atomic.Pointer[metrics.Metrics]{}
	srv, err := streaming.NewServer(cfg, streamRuntime{rt: rt, metrics: m})
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s := &StreamServer{server: srv, listener: lis, http: &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}, metrics: m}
	go func() {
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("streaming server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is where the server listens.
func (s *StreamServer) Addr() string { return s.listener.Addr().String() }

// UseMetrics counts the sessions in m from now on.
func (s *StreamServer) UseMetrics(m *metrics.Metrics) { s.metrics.Store(m) }

// Close stops the server and ends open sessions.
func (s *StreamServer) Close() error { return s.http.Close() }

// streamRuntime adapts sandbox.Runtime to cri-streaming's Runtime.
type streamRuntime struct {
	rt      *sandbox.Runtime
	metrics *atomic.Pointer[metrics.Metrics]
}

func (a streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer a.metrics.Load().StreamSession("exec")()
	code, err := a.rt.Exec(ctx, id, cmd, sandbox.Streams{Stdin: in, Stdout: out, Stderr: errw, TTY: tty, Resize: sizes(ctx, resize)})
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: int(code)}
	}
	return nil
}

func (a streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	defer a.metrics.Load().StreamSession("attach")()
	return a.rt.Attach(ctx, id, sandbox.Streams{Stdin: in, Stdout: out, Stderr: errw, TTY: tty, Resize: sizes(ctx, resize)})
}

func (a streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer a.metrics.Load().StreamSession("portforward")()
	return a.rt.PortForward(ctx, podID, port, stream)
}

// sizes converts the library's resize events to the domain's.
func sizes(ctx context.Context, in <-chan remotecommand.TerminalSize) <-chan sandbox.TerminalSize {
	if in == nil {
		return nil
	}
	out := make(chan sandbox.TerminalSize, 1)
	go func() {
		defer close(out)
		for {
			select {
			case sz, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- sandbox.TerminalSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Exec, Attach and PortForward check the request and hand out a URL.

func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, invalid("exec needs a command")
	}
	if !req.GetStdin() && !req.GetStdout() && !req.GetStderr() {
		return nil, invalid("exec needs one of stdin, stdout or stderr")
	}
	if req.GetTty() && req.GetStderr() {
		return nil, invalid("exec with a tty has no separate stderr")
	}
	if err := s.requireRunning(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streams.server.GetExec(req)
}

func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := s.requireRunning(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streams.server.GetAttach(req)
}

func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	p, err := s.runtime.Pod(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if p.State != sandbox.PodReady {
		return nil, fmt.Errorf("pod %s is not ready: %w", p.ID, sandbox.ErrFailedPrecondition)
	}
	req.PodSandboxId = p.ID
	return s.streams.server.GetPortForward(req)
}

func (s *Service) requireRunning(id string) error {
	c, err := s.runtime.Container(id)
	if err != nil {
		return err
	}
	if c.State != sandbox.ContainerRunning {
		return fmt.Errorf("container %s is not running: %w", c.ID, sandbox.ErrFailedPrecondition)
	}
	return nil
}

func (s *Service) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	if err := s.runtime.ReopenLog(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
