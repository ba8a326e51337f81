package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// removals runs the slow part of RemoveContainer, deleting the root
// filesystem (unmount, layer directory, c/storage's fsynced JSON) and the
// bundle, after the RPC has returned, as containerd leaves snapshot removal
// to its garbage collector. It took 40-180 ms of RemoveContainer on a busy
// 2-core host (make bench). The container's record is deleted first and
// the bundle last: a crash in between leaves a bundle without a record,
// which the next start removes with its root filesystem
// (removeOrphanBundles), as it does for a creation that a crash cut short.
// RemovePodSandbox returns only once its containers' removals are done, so
// a removed pod leaves no mount behind; the pod's own cleanup overlaps them.
type removals struct {
	mu      sync.Mutex
	pending map[*removal]bool
	failed  map[string][]*removal // by pod: retried by RemovePod until they succeed
}

type removal struct {
	pod, id, bundle string
	err             error // set before done is closed
	done            chan struct{}
}

func newRemovals() *removals {
	return &removals{pending: map[*removal]bool{}, failed: map[string][]*removal{}}
}

func (q *removals) add(pod, id, bundle string) *removal {
	rm := &removal{pod: pod, id: id, bundle: bundle, done: make(chan struct{})}
	q.mu.Lock()
	q.pending[rm] = true
	q.mu.Unlock()
	return rm
}

func (q *removals) finish(rm *removal) {
	q.mu.Lock()
	delete(q.pending, rm)
	if rm.err != nil {
		q.failed[rm.pod] = append(q.failed[rm.pod], rm)
	}
	q.mu.Unlock()
	close(rm.done)
}

// takeFailed returns (and forgets) the failed removals of pod.
func (q *removals) takeFailed(pod string) []*removal {
	q.mu.Lock()
	defer q.mu.Unlock()
	f := q.failed[pod]
	delete(q.failed, pod)
	return f
}

// wait returns when the removals of pod ("": of every pod) pending now
// are done, or with ctx's error. Removals that start later are not waited
// for, so a steady stream of them cannot hold a caller forever.
func (q *removals) wait(ctx context.Context, pod string) error {
	q.mu.Lock()
	var chans []chan struct{}
	for rm := range q.pending {
		if pod == "" || rm.pod == pod {
			chans = append(chans, rm.done)
		}
	}
	q.mu.Unlock()
	for _, ch := range chans {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// removeLater deletes the container's root filesystem, then its bundle,
// in the background. On failure the bundle stays, so the next start
// retries (removeOrphanBundles).
func (r *Runtime) removeLater(pod, id, bundle string) {
	rm := r.removals.add(pod, id, bundle)
	go func() {
		defer r.removals.finish(rm)
		ctx, cancel := cleanupContext()
		defer cancel()
		rm.err = r.removeContainerFiles(ctx, id, bundle)
		if rm.err != nil {
			r.log.Warn("remove the root filesystem of a removed container; retried by RemovePodSandbox and at the next start", "container", id, "err", rm.err)
		}
	}()
}

func (r *Runtime) removeContainerFiles(ctx context.Context, id, bundle string) error {
	if err := r.removeRootfs(ctx, id); err != nil {
		return fmt.Errorf("remove the root filesystem of container %s: %w", id, err)
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
	if err := r.removals.wait(ctx, pod); err != nil {
		return fmt.Errorf("wait for the removal of the pod's containers: %w", err)
	}
	var errs []error
	for _, rm := range r.removals.takeFailed(pod) {
		if err := r.removeContainerFiles(ctx, rm.id, rm.bundle); err != nil {
			rm.err = err
			r.removals.mu.Lock()
			r.removals.failed[pod] = append(r.removals.failed[pod], rm)
			r.removals.mu.Unlock()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WaitRemovals waits until the root filesystems of the containers removed
// so far are gone: an image is in use until then, so RemoveImage waits
// first.
func (r *Runtime) WaitRemovals(ctx context.Context) error {
	return r.removals.wait(ctx, "")
}

// closeRemovalsTimeout bounds how long Close waits for pending removals;
// what is left is removed at the next start.
const closeRemovalsTimeout = 10 * time.Second

// closeDetachedTimeout bounds how long Close waits for cancelled detached
// creates (store/results.go) to undo their steps.
const closeDetachedTimeout = 5 * time.Second
