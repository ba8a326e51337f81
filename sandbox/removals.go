package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/peapod-cri/peapod/sandbox/hostfs"
)

// The slow part of RemoveContainer (root filesystem, bundle) runs after
// the reply, tracked by r.removals (sandbox/removals).

// removeLater deletes the container's root filesystem, then its bundle,
// in the background. On failure the bundle stays, so the next start
// retries (removeOrphanBundles).
func (r *Runtime) removeLater(pod, id, bundle string) {
	rm := r.removals.Add(pod, id, bundle)
	go func() {
		defer r.removals.Finish(rm)
		ctx, cancel := cleanupContext()
		defer cancel()
		rm.Err = r.removeContainerFiles(ctx, id, bundle)
		if rm.Err != nil {
			r.log.Warn("remove the root filesystem of a removed container; retried by RemovePodSandbox and at the next start", "container", id, "err", rm.Err)
		}
	}()
}

func (r *Runtime) removeContainerFiles(ctx context.Context, id, bundle string) error {
	if err := r.removeRootfs(ctx, id); err != nil {
		return fmt.Errorf("remove the root filesystem of container %s: %w", id, err)
	}
	if err := hostfs.UnpinTargetPIDNS(bundle); err != nil {
		return err
	}
	if err := os.RemoveAll(bundle); err != nil {
		return fmt.Errorf("remove the bundle of container %s: %w", id, err)
	}
	return nil
}

// finishRemovals waits for the background removals of pod's containers
// and retries, once, those that failed. An error that remains is returned:
// RemovePodSandbox fails with it (the pod stays listed, and the kubelet's
// retry tries again) rather than report success with mounts left.
func (r *Runtime) finishRemovals(ctx context.Context, pod string) error {
	if err := r.removals.Wait(ctx, pod); err != nil {
		return fmt.Errorf("wait for the removal of the pod's containers: %w", err)
	}
	var errs []error
	for _, rm := range r.removals.TakeFailed(pod) {
		if err := r.removeContainerFiles(ctx, rm.ID, rm.Bundle); err != nil {
			r.removals.Refail(rm, err)
			errs = append(errs, err)
		}
	}
	return internal(errors.Join(errs...))
}

// WaitRemovals waits until the root filesystems of the containers removed
// so far are gone: an image is in use until then, so RemoveImage waits
// first.
func (r *Runtime) WaitRemovals(ctx context.Context) error {
	return r.removals.Wait(ctx, "")
}

// closeRemovalsTimeout bounds how long Close waits for pending removals;
// what is left is removed at the next start.
const closeRemovalsTimeout = 10 * time.Second

// closeDetachedTimeout bounds how long Close waits for cancelled detached
// creates (store/results.go) to undo their steps.
const closeDetachedTimeout = 5 * time.Second
