package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/runner"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
)

// removePodCgroup removes the pod's cgroup once its processes are gone.
func (r *Runtime) removePodCgroup(p *pod) {
	if p.Cgroup == "" {
		return
	}
	if err := cgroups.RemovePod(p.Cgroup); err != nil {
		r.log.Warn("remove pod cgroup", "pod", p.ID, "err", err)
	}
}

// UpdateContainerResources changes a container's limits. A running
// container gets them at once through libcontainer; a created one when it
// starts. What the update leaves unset (zero) keeps its value. The new
// values are what ContainerStatus reports afterwards.
func (r *Runtime) UpdateContainerResources(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources) error {
	return r.updateContainerResources(ctx, id, res, true)
}

// updateContainerResources is UpdateContainerResources; askPlugins: the
// NRI plugins may adjust the update first (not for the updates they ask
// themselves).
func (r *Runtime) updateContainerResources(ctx context.Context, id string, res *runtimeapi.LinuxContainerResources, askPlugins bool) (retErr error) {
	c, err := r.lookupContainer(id)
	if err != nil {
		return err
	}
	pl := r.plugins()
	var podCopy Pod
	var ctrCopy Container
	if askPlugins && pl.Active() {
		c.mu.Lock()
		ctrCopy = c.Container
		c.mu.Unlock()
		var ok bool
		if podCopy, ok = r.podCopy(ctrCopy.PodID); ok && ctrCopy.State != ContainerExited {
			adjusted, err := pl.UpdateContainer(ctx, &podCopy, &ctrCopy, res)
			if err != nil {
				return fmt.Errorf("update resources of container %s: %w", c.ID, pluginError("UpdateContainer", err))
			}
			res = adjusted
			defer func() { // after c.mu is released
				if retErr == nil {
					pl.PostUpdateContainer(ctx, &podCopy, &ctrCopy)
				}
			}()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.State == ContainerExited {
		return fmt.Errorf("update resources of container %s: it has exited: %w", c.ID, ErrFailedPrecondition)
	}
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil {
		return fmt.Errorf("update resources of container %s: %w", c.ID, err)
	}
	spec.Linux.Resources = cgroups.Merge(spec.Linux.Resources, cgroups.TolerateMissingHugetlb(cgroups.Limits(res, cgroups.SwapAccounted())))
	if err := cgroups.Check(spec.Linux.Resources); err != nil {
		return fmt.Errorf("update resources of container %s: %v: %w", c.ID, err, ErrInvalidArgument)
	}
	if rt := r.ociOfContainer(c); rt != nil && c.State == ContainerRunning {
		if err := rt.Update(ctx, c.ID, spec.Linux.Resources); err != nil {
			return fmt.Errorf("update resources of container %s: %w", c.ID, err)
		}
	} else if c.State == ContainerRunning {
		err := runner.SetLimits(libcontainerRoot(r.opts.State), c.ID, nil, spec)
		if errors.Is(err, runner.ErrBadSpec) {
			err = fmt.Errorf("%w: %w", err, ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("update resources of container %s: %w", c.ID, err)
		}
	}
	if err := runner.WriteSpec(c.Bundle, spec); err != nil {
		return fmt.Errorf("update resources of container %s: %w", c.ID, err)
	}
	cfg := proto.Clone(c.Config).(*runtimeapi.ContainerConfig)
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = oci.MergeResources(cfg.Linux.Resources, res)
	c.Config = cfg
	if err := r.saveContainer(&c.Container); err != nil {
		return fmt.Errorf("save container %s: %w", c.ID, err)
	}
	r.log.Info("container resources updated", "container", c.ID)
	return nil
}

// UpdatePodResources applies a pod's new resources and overhead to its
// cgroup (kubelet's in-place pod resize).
func (r *Runtime) UpdatePodResources(ctx context.Context, id string, overhead, res *runtimeapi.LinuxContainerResources) error {
	p, err := r.lookupPod(id)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh()
	if p.State != PodReady || p.Cgroup == "" {
		return fmt.Errorf("update resources of pod %s: it is not running in a pod cgroup: %w", p.ID, ErrFailedPrecondition)
	}
	cfg := proto.Clone(p.Config).(*runtimeapi.PodSandboxConfig)
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	if res != nil {
		cfg.Linux.Resources = oci.MergeResources(cfg.Linux.Resources, res)
	}
	if overhead != nil {
		cfg.Linux.Overhead = oci.MergeResources(cfg.Linux.Overhead, overhead)
	}
	limits := oci.PodLimits(cfg.Linux)
	if err := cgroups.Check(limits); err != nil {
		return fmt.Errorf("update resources of pod %s: %v: %w", p.ID, err, ErrInvalidArgument)
	}
	if err := cgroups.UpdatePod(p.Cgroup, limits); err != nil {
		return fmt.Errorf("update resources of pod %s: %w", p.ID, err)
	}
	p.Config = cfg
	if err := r.savePod(&p.Pod); err != nil {
		return fmt.Errorf("save pod %s: %w", p.ID, err)
	}
	r.log.Info("pod resources updated", "pod", p.ID)
	return nil
}
