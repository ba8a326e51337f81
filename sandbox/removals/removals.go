// Package removals tracks the removals of containers' files that run after
// their RPC returned, by pod, so that a pod's removal can wait for (and
// retry) those of its containers, and image removal for all of them.
package removals

import (
	"context"
	"sync"
)

// Queue tracks the slow part of RemoveContainer, deleting the root
// filesystem (unmount, layer directory, c/storage's fsynced JSON) and the
// bundle, after the RPC has returned, as containerd leaves snapshot removal
// to its garbage collector. It took 40-180 ms of RemoveContainer on a busy
// 2-core host (make bench). The container's record is deleted first and
// the bundle last: a crash in between leaves a bundle without a record,
// which the next start removes with its root filesystem
// (sandbox's removeOrphanBundles), as it does for a creation that a crash cut short.
// RemovePodSandbox returns only once its containers' removals are done, so
// a removed pod leaves no mount behind; the pod's own cleanup overlaps them.
type Queue struct {
	mu      sync.Mutex
	pending map[*Removal]bool
	failed  map[string][]*Removal // by pod: retried by RemovePod until they succeed
}

// Removal is one container's removal.
type Removal struct {
	Pod, ID, Bundle string
	Err             error // set before Finish
	done            chan struct{}
}

// New returns an empty queue.
func New() *Queue {
	return &Queue{pending: map[*Removal]bool{}, failed: map[string][]*Removal{}}
}

// Add registers a removal that is starting.
func (q *Queue) Add(pod, id, bundle string) *Removal {
	rm := &Removal{Pod: pod, ID: id, Bundle: bundle, done: make(chan struct{})}
	q.mu.Lock()
	q.pending[rm] = true
	q.mu.Unlock()
	return rm
}

// Finish marks rm done; if rm.Err is set, it is kept as failed.
func (q *Queue) Finish(rm *Removal) {
	q.mu.Lock()
	delete(q.pending, rm)
	if rm.Err != nil {
		q.failed[rm.Pod] = append(q.failed[rm.Pod], rm)
	}
	q.mu.Unlock()
	close(rm.done)
}

// TakeFailed returns (and forgets) the failed removals of pod.
func (q *Queue) TakeFailed(pod string) []*Removal {
	q.mu.Lock()
	defer q.mu.Unlock()
	f := q.failed[pod]
	delete(q.failed, pod)
	return f
}

// Refail keeps a taken removal whose retry failed (with err) as failed.
func (q *Queue) Refail(rm *Removal, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	rm.Err = err
	q.failed[rm.Pod] = append(q.failed[rm.Pod], rm)
}

// Wait returns when the removals of pod ("": of every pod) pending now
// are done, or with ctx's error. Removals that start later are not waited
// for, so a steady stream of them cannot hold a caller forever.
func (q *Queue) Wait(ctx context.Context, pod string) error {
	q.mu.Lock()
	var chans []chan struct{}
	for rm := range q.pending {
		if pod == "" || rm.Pod == pod {
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
