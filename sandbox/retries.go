package sandbox

import (
	"context"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/names"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RunPod creates a pod (runPod) detached from ctx, so that kubelet's retry
// after a deadline gets the pod instead of "name is reserved".
func (r *Runtime) RunPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (Pod, error) {
	if err := oci.ValidatePod(cfg); err != nil {
		return Pod{}, err
	}
	req, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return Pod{}, fmt.Errorf("encode pod config: %v: %w", err, ErrInvalidArgument)
	}
	name := names.Pod(cfg)
	p, joined, err := r.podOps.Do(ctx, name, handler+"\x00"+string(req), func(ctx context.Context) (Pod, error) {
		return r.runPod(ctx, cfg, handler)
	})
	switch {
	case ctx.Err() != nil && err != nil:
		r.log.Info("caller left before the pod was ready; it is kept for a retry", "name", name, "err", ctx.Err())
	case joined && err == nil:
		r.log.Info("pod handed to a retry", "pod", p.ID, "name", name)
	}
	return p, err
}

// CreateContainer creates a container (createContainer) detached from ctx,
// as RunPod does.
func (r *Runtime) CreateContainer(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig, img Image) (Container, error) {
	p, err := r.lookupPod(podID)
	if err != nil || cfg == nil {
		return r.createContainer(ctx, podID, cfg, img, nil) // fails, saying why
	}
	p.mu.Lock()
	podID, podCfg := p.ID, p.Config
	p.mu.Unlock()
	req, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return Container{}, fmt.Errorf("encode container config: %v: %w", err, ErrInvalidArgument)
	}
	name := names.Container(podCfg, cfg)
	c, joined, err := r.ctrOps.Do(ctx, name, podID+"\x00"+img.ID+"\x00"+string(req), func(ctx context.Context) (Container, error) {
		return r.createContainer(ctx, podID, cfg, img, nil)
	})
	switch {
	case ctx.Err() != nil && err != nil:
		r.log.Info("caller left before the container was created; it is kept for a retry", "name", name, "err", ctx.Err())
	case joined && err == nil:
		r.log.Info("container handed to a retry", "container", c.ID, "name", name)
	}
	return c, err
}
