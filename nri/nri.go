// Package nri serves the Node Resource Interface (github.com/containerd/nri)
// on a unix socket, as containerd and CRI-O do: node agents (resource
// policies, device injectors, topology managers) connect as plugins, are
// synchronized with the pods and containers that exist, are told each
// lifecycle step, adjust containers before they are created and update
// their resources. It is the runtime side of NRI's adaptation library,
// fed by package sandbox through sandbox.Plugins; it decides nothing about
// the lifecycle's order, which sandbox owns.
//
// Trust: a plugin is as trusted as the node's administrator (it can add
// OCI hooks, which run as root on the host, and mounts), as with containerd
// and CRI-O; the socket is root's only (0600 in a 0700 directory). What a
// plugin asks is still checked as CRI input is (nri/adjust.go), so that a
// buggy plugin gets a clear refusal instead of a broken container.
package nri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/runner"
	"github.com/peapod-cri/peapod/sandbox/store"
)

// DefaultSocket is NRI's well-known socket, where plugins connect unless
// told otherwise.
const DefaultSocket = adaptation.DefaultSocketPath

// Options configure a Server.
type Options struct {
	Socket              string
	RegistrationTimeout time.Duration // a connecting plugin must register within it
	RequestTimeout      time.Duration // each hook call of a plugin; a late plugin is disconnected
	RuntimeName         string
	RuntimeVersion      string
	Logger              *slog.Logger
}

// Runtime is what the plugins reach of peapod's runtime: the state a
// connecting plugin is synchronized with, and the resource updates
// plugins ask for.
type Runtime interface {
	Pods() []store.Pod
	Containers() []store.Container
	PluginUpdate(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources) error
}

// Server is the runtime's end of NRI. Its hooks are sandbox.Plugins.
type Server struct {
	opts    Options
	log     *slog.Logger
	a       *adaptation.Adaptation
	rt      atomic.Pointer[Runtime]
	plugins atomic.Int64 // connected plugins (the adaptation's count)
	host    hostFacts
	started bool
	sock    os.FileInfo // the socket as made at Start: removed at Stop only if still ours
}

// New prepares the server; nothing listens until Start.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "nri"), host: readHostFacts()}
	nrilog.Set(slogAdapter{s.log})
	// Process-wide settings of the library; one server per daemon.
	if opts.RegistrationTimeout > 0 {
		adaptation.SetPluginRegistrationTimeout(opts.RegistrationTimeout)
	}
	if opts.RequestTimeout > 0 {
		adaptation.SetPluginRequestTimeout(opts.RequestTimeout)
	}
	a, err := adaptation.New(opts.RuntimeName, opts.RuntimeVersion, s.synchronize, s.updateContainers,
		adaptation.WithSocketPath(s.privateSocket()),
		// Plugins connect to the socket; peapod launches none itself
		// (containerd's /opt/nri/plugins): what runs as root on the node
		// is the administrator's to start.
		adaptation.WithPluginPath(""),
		adaptation.WithPluginConfigPath(""),
		adaptation.WithMetrics(pluginCount{&s.plugins}),
	)
	if err != nil {
		return nil, fmt.Errorf("nri: %w", err)
	}
	s.a = a
	return s, nil
}

// ErrSocketInUse is another process (containerd, CRI-O, another peapod)
// serving NRI on the configured socket: it is not taken from it.
var ErrSocketInUse = errors.New("another runtime serves NRI on this socket")

// Start serves the socket; rt is what plugins are synchronized with.
func (s *Server) Start(rt Runtime) error {
	s.rt.Store(&rt)
	if c, err := net.DialTimeout("unix", s.opts.Socket, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("nri socket %s: %w", s.opts.Socket, ErrSocketInUse)
	}
	// The library makes the socket with the process's umask (0755 with
	// the usual 0022, 0777 with 0): it listens in a private directory,
	// 0700, and the socket, made 0600, is renamed into place, so that it
	// is never reachable at its path with the umask's mode.
	priv := filepath.Dir(s.privateSocket())
	if err := os.MkdirAll(filepath.Dir(s.opts.Socket), 0o700); err != nil {
		return fmt.Errorf("nri socket %s: %w", s.opts.Socket, err)
	}
	os.RemoveAll(priv) // a crash's
	if err := os.Mkdir(priv, 0o700); err != nil {
		return fmt.Errorf("nri socket %s: %w", s.opts.Socket, err)
	}
	defer os.RemoveAll(priv)
	if err := s.a.Start(); err != nil {
		return fmt.Errorf("nri: %w", err)
	}
	s.started = true
	err := os.Chmod(s.privateSocket(), 0o600)
	if err == nil {
		err = os.Rename(s.privateSocket(), s.opts.Socket)
	}
	if err != nil {
		s.Stop()
		return fmt.Errorf("nri socket %s: %w", s.opts.Socket, err)
	}
	s.sock, _ = os.Lstat(s.opts.Socket)
	s.log.Info("serving NRI", "socket", s.opts.Socket)
	return nil
}

// privateSocket is where the library listens before the socket is
// renamed to its configured path: a 0700 directory beside it.
func (s *Server) privateSocket() string {
	return filepath.Join(filepath.Dir(s.opts.Socket), ".peapod-nri-"+filepath.Base(s.opts.Socket), "nri.sock")
}

// Stop disconnects the plugins and removes the socket.
func (s *Server) Stop() {
	if !s.started {
		return
	}
	s.a.Stop()
	// Another runtime started later may have replaced the socket with its
	// own (the library removes what is there): that one is not ours.
	if now, err := os.Lstat(s.opts.Socket); err == nil && s.sock != nil && os.SameFile(now, s.sock) {
		os.Remove(s.opts.Socket)
	}
	s.started = false
}

// Active reports whether a plugin is connected.
func (s *Server) Active() bool { return s != nil && s.plugins.Load() > 0 }

// BlockSync holds off the synchronization of a connecting plugin.
func (s *Server) BlockSync() func() {
	b := s.a.BlockPluginSync()
	return b.Unblock
}

func (s *Server) runtime() Runtime { return *s.rt.Load() }

// RunPod tells the plugins of a pod before it is listed.
func (s *Server) RunPod(ctx context.Context, p *store.Pod) error {
	return s.a.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: podSandbox(p)})
}

// StopPod tells the plugins a pod is stopping (its containers stopped).
func (s *Server) StopPod(ctx context.Context, p *store.Pod) error {
	return s.a.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: podSandbox(p)})
}

// RemovePod tells the plugins a pod was removed.
func (s *Server) RemovePod(ctx context.Context, p *store.Pod) error {
	return s.a.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: podSandbox(p)})
}

// CreateContainer asks the plugins for their adjustments of a container
// about to be created and applies them to spec; the updates they ask of
// other containers are applied too.
func (s *Server) CreateContainer(ctx context.Context, p *store.Pod, c *store.Container, spec *specs.Spec) error {
	rsp, err := s.a.CreateContainer(ctx, &api.CreateContainerRequest{Pod: podSandbox(p), Container: container(c, spec)})
	if err != nil {
		return err
	}
	if err := s.adjust(spec, rsp.GetAdjust()); err != nil {
		return fmt.Errorf("adjustment of container %s refused: %w", c.ID, err)
	}
	s.applyUpdates(ctx, rsp.GetUpdate(), "")
	s.logEvictions(rsp.GetEvict())
	return nil
}

// PostCreateContainer reports a created container.
func (s *Server) PostCreateContainer(ctx context.Context, p *store.Pod, c *store.Container) {
	s.report("PostCreateContainer", c.ID, s.a.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)}))
}

// StartContainer tells the plugins a container is about to start.
func (s *Server) StartContainer(ctx context.Context, p *store.Pod, c *store.Container) error {
	return s.a.StartContainer(ctx, &api.StartContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)})
}

// PostStartContainer reports a started container.
func (s *Server) PostStartContainer(ctx context.Context, p *store.Pod, c *store.Container) {
	s.report("PostStartContainer", c.ID, s.a.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)}))
}

// UpdateContainer lets the plugins adjust a resource update of a
// container and returns the update to apply; what they ask of other
// containers is applied.
func (s *Server) UpdateContainer(ctx context.Context, p *store.Pod, c *store.Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	rsp, err := s.a.UpdateContainer(ctx, &api.UpdateContainerRequest{
		Pod:            podSandbox(p),
		Container:      s.containerOf(c),
		LinuxResources: nriResources(res),
	})
	if err != nil {
		return nil, err
	}
	for _, u := range rsp.GetUpdate() {
		if u.GetContainerId() == c.ID {
			res = mergeUpdate(res, u.GetLinux().GetResources())
		}
	}
	s.applyUpdates(ctx, rsp.GetUpdate(), c.ID)
	s.logEvictions(rsp.GetEvict())
	return res, nil
}

// PostUpdateContainer reports an updated container.
func (s *Server) PostUpdateContainer(ctx context.Context, p *store.Pod, c *store.Container) {
	s.report("PostUpdateContainer", c.ID, s.a.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)}))
}

// StopContainer tells the plugins a container stopped and applies the
// updates they ask of the others (resources it freed).
func (s *Server) StopContainer(ctx context.Context, p *store.Pod, c *store.Container) {
	rsp, err := s.a.StopContainer(ctx, &api.StopContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)})
	if err != nil {
		s.report("StopContainer", c.ID, err)
		return
	}
	s.applyUpdates(ctx, rsp.GetUpdate(), c.ID)
}

// RemoveContainer tells the plugins a container was removed.
func (s *Server) RemoveContainer(ctx context.Context, p *store.Pod, c *store.Container) {
	s.report("RemoveContainer", c.ID, s.a.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: podSandbox(p), Container: s.containerOf(c)}))
}

func (s *Server) report(hook, id string, err error) {
	if err != nil {
		s.log.Warn("NRI "+hook, "container", id, "err", err)
	}
}

// containerOf describes a recorded container, with what its spec says.
func (s *Server) containerOf(c *store.Container) *api.Container {
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil {
		spec = nil // removed meanwhile: the record says enough
	}
	return container(c, spec)
}

// synchronize gives a connecting plugin the pods and containers that
// exist (the adaptation holds off creations meanwhile: BlockSync) and
// applies the updates it asks.
func (s *Server) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	rt := s.runtime()
	pods := rt.Pods()
	ctrs := rt.Containers()
	ap := make([]*api.PodSandbox, 0, len(pods))
	for i := range pods {
		ap = append(ap, podSandbox(&pods[i]))
	}
	ac := make([]*api.Container, 0, len(ctrs))
	for i := range ctrs {
		ac = append(ac, s.containerOf(&ctrs[i]))
	}
	updates, err := cb(ctx, ap, ac)
	if err != nil {
		return err
	}
	s.applyUpdates(ctx, updates, "")
	return nil
}

// updateContainers applies a plugin's unsolicited updates; it returns the
// ones that failed.
func (s *Server) updateContainers(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return s.applyUpdates(ctx, updates, ""), nil
}

// applyUpdates applies updates to containers other than skip (the one a
// hook is about, updated by its caller) and returns those that failed.
func (s *Server) applyUpdates(ctx context.Context, updates []*api.ContainerUpdate, skip string) []*api.ContainerUpdate {
	var failed []*api.ContainerUpdate
	for _, u := range updates {
		if u.GetContainerId() == skip || u.GetLinux().GetResources() == nil {
			continue
		}
		res := mergeUpdate(nil, u.GetLinux().GetResources())
		if err := s.runtime().PluginUpdate(ctx, u.GetContainerId(), res); err != nil {
			if !u.GetIgnoreFailure() {
				failed = append(failed, u)
			}
			s.log.Warn("NRI plugin's container update", "container", u.GetContainerId(), "err", err)
		}
	}
	return failed
}

// logEvictions: evicting a container is the kubelet's decision; peapod
// does not act on a plugin's wish (neither does containerd).
func (s *Server) logEvictions(ev []*api.ContainerEviction) {
	for _, e := range ev {
		s.log.Warn("NRI plugin asked to evict a container; not supported", "container", e.GetContainerId(), "reason", e.GetReason())
	}
}

// pluginCount keeps the adaptation's count of connected plugins.
type pluginCount struct{ n *atomic.Int64 }

func (m pluginCount) RecordPluginInvocation(string, string, error)      {}
func (m pluginCount) RecordPluginLatency(string, string, time.Duration) {}
func (m pluginCount) UpdatePluginCount(count int)                       { m.n.Store(int64(count)) }
func (m pluginCount) RecordPluginAdjustments(string, string, *api.ContainerAdjustment, int, int) {
}

// slogAdapter sends the library's log lines to the daemon's log.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debugf(_ context.Context, f string, args ...any) {
	a.l.Debug(fmt.Sprintf(f, args...))
}
func (a slogAdapter) Infof(_ context.Context, f string, args ...any) {
	a.l.Debug(fmt.Sprintf(f, args...))
}
func (a slogAdapter) Warnf(_ context.Context, f string, args ...any) {
	a.l.Warn(fmt.Sprintf(f, args...))
}
func (a slogAdapter) Errorf(_ context.Context, f string, args ...any) {
	msg := fmt.Sprintf(f, args...)
	switch {
	case strings.Contains(msg, adaptation.ErrWasmDisabled.Error()):
		a.l.Debug(msg) // built without WASM plugins on purpose (build tag nri_no_wasm)
		return
	case strings.HasPrefix(msg, "closing plugin"):
		a.l.Warn(msg) // a plugin that went away: the plugin's failure, not the daemon's
		return
	}
	a.l.Error(msg)
}
