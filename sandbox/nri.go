package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Plugins are the node's NRI plugins (package nri serves them): the
// lifecycle tells them each step of a pod and a container, in order, and
// lets them adjust a container before it is created. The hooks that may
// fail (RunPod, CreateContainer, StartContainer, UpdateContainer) fail the
// CRI call; the others only report.
//
// Ordering is what the lifecycle guarantees, not the implementation: a
// pod's RunPod hook runs before the pod is listed, a container's
// CreateContainer hook before it is listed, StopContainer once per
// container after it stopped (whether it exited on its own or was
// stopped), StopPod after the pod's containers' StopContainer hooks and
// while the pod is still listed, Remove* last.
type Plugins interface {
	// Active reports whether any plugin is connected; with none, the
	// lifecycle skips the hooks' work (reading specs, converting).
	Active() bool
	// BlockSync keeps a plugin that connects meanwhile from being
	// synchronized until unblock: a pod or container made between its
	// hook and its being listed would reach that plugin neither way.
	BlockSync() (unblock func())

	RunPod(ctx context.Context, p *Pod) error
	StopPod(ctx context.Context, p *Pod) error
	RemovePod(ctx context.Context, p *Pod) error

	// CreateContainer adjusts spec in place with what the plugins ask
	// (validated as untrusted input: the result is checked again by the
	// caller, as a spec built from CRI is).
	CreateContainer(ctx context.Context, p *Pod, c *Container, spec *specs.Spec) error
	PostCreateContainer(ctx context.Context, p *Pod, c *Container)
	StartContainer(ctx context.Context, p *Pod, c *Container) error
	PostStartContainer(ctx context.Context, p *Pod, c *Container)
	// UpdateContainer returns the resources to apply: the request as
	// the plugins adjusted it.
	UpdateContainer(ctx context.Context, p *Pod, c *Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error)
	PostUpdateContainer(ctx context.Context, p *Pod, c *Container)
	StopContainer(ctx context.Context, p *Pod, c *Container)
	RemoveContainer(ctx context.Context, p *Pod, c *Container)
}

// ErrPluginRefused is a plugin (NRI) failing a hook that fails the CRI
// call: the message names the hook and the plugin's error.
var ErrPluginRefused = errors.New("refused by an NRI plugin")

// pluginError wraps a hook's failure for the CRI caller.
func pluginError(hook string, err error) error {
	return fmt.Errorf("NRI %s: %v: %w", hook, err, ErrPluginRefused)
}

func (r *Runtime) plugins() Plugins {
	if r.opts.Plugins == nil {
		return noPlugins{}
	}
	return r.opts.Plugins
}

// nriOnce is the once-per-object part of the hooks: a container's
// StopContainer hook and a pod's StopPod hook run once however many ways
// the stop is reached (its own exit, StopContainer, StopPodSandbox,
// RemoveContainer), and a caller that needs the hook to have run (the
// next step must come after it) waits for it.
type nriOnce struct{ once sync.Once }

// notifyContainerStopped runs c's StopContainer hook once, after the
// container stopped (or was never started); concurrent callers wait for
// the first. The caller holds no lock of c or its pod.
func (r *Runtime) notifyContainerStopped(c *container) {
	c.nriStopped.once.Do(func() {
		pl := r.plugins()
		if !pl.Active() {
			return
		}
		c.mu.Lock()
		cc := c.Container
		c.mu.Unlock()
		pp, ok := r.podCopy(cc.PodID)
		if !ok {
			return
		}
		ctx, cancel := cleanupContext()
		defer cancel()
		pl.StopContainer(ctx, &pp, &cc)
	})
}

// podCopy is a copy of a known pod's record.
func (r *Runtime) podCopy(id string) (Pod, bool) {
	r.mu.RLock()
	p := r.pods[id]
	r.mu.RUnlock()
	if p == nil {
		return Pod{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Pod, true
}

// podCopyLocked is a copy of p's record; the caller may hold a container's
// lock (taken before the pod's).
func podCopyLocked(p *pod) Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Pod
}

// PluginUpdate applies resources a plugin asks for a container (an
// unsolicited update, or one returned with another hook's answer), as
// UpdateContainerResources does but without asking the plugins again.
func (r *Runtime) PluginUpdate(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources) error {
	return r.updateContainerResources(ctx, id, res, false)
}

type noPlugins struct{}

func (noPlugins) Active() bool                                          { return false }
func (noPlugins) BlockSync() func()                                     { return func() {} }
func (noPlugins) RunPod(context.Context, *Pod) error                    { return nil }
func (noPlugins) StopPod(context.Context, *Pod) error                   { return nil }
func (noPlugins) RemovePod(context.Context, *Pod) error                 { return nil }
func (noPlugins) PostCreateContainer(context.Context, *Pod, *Container) {}
func (noPlugins) StartContainer(context.Context, *Pod, *Container) error {
	return nil
}
func (noPlugins) PostStartContainer(context.Context, *Pod, *Container)  {}
func (noPlugins) PostUpdateContainer(context.Context, *Pod, *Container) {}
func (noPlugins) StopContainer(context.Context, *Pod, *Container)       {}
func (noPlugins) RemoveContainer(context.Context, *Pod, *Container)     {}
func (noPlugins) CreateContainer(context.Context, *Pod, *Container, *specs.Spec) error {
	return nil
}
func (noPlugins) UpdateContainer(_ context.Context, _ *Pod, _ *Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	return res, nil
}
