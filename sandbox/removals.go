package sandbox

import (
	"context"
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
}

type removal struct {
	pod  string
	done chan struct{}
}

func newRemovals() *removals { return &removals{pending: map[*removal]bool{}} }

func (q *removals) add(pod string) *removal {
	rm := &removal{pod: pod, done: make(chan struct{})}
	q.mu.Lock()
	q.pending[rm] = true
	q.mu.Unlock()
	return rm
}

func (q *removals) finish(rm *removal) {
	q.mu.Lock()
	delete(q.pending, rm)
	q.mu.Unlock()
	close(rm.done)
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
	rm := r.removals.add(pod)
	go func() {
		defer r.removals.finish(rm)
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := r.removeRootfs(ctx, id); err != nil {
			r.log.Warn("remove the root filesystem of a removed container; retried at the next start", "container", id, "err", err)
			return
		}
		if err := os.RemoveAll(bundle); err != nil {
			r.log.Warn("remove the bundle of a removed container", "container", id, "err", err)
		}
	}()
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
