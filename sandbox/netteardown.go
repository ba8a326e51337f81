package sandbox

import (
	"context"
	"sync"
)

// netTeardowns runs the part of a stopped pod's network teardown that
// StopPodSandbox does not wait for (network.Backend.DetachPod's finish:
// on the built-in network, deleting the veth, about three quarters of the
// stop, then freeing the address), one at a time per pod. RemovePodSandbox
// waits for its pod's, so a removed pod leaves nothing behind; a failed
// one is kept for RemovePodSandbox to report (its StopPod detaches again
// and so retries). Nothing here needs to survive the daemon: a stopped
// pod's network is released at the next start (reconcileNetwork).
type netTeardowns struct {
	mu      sync.Mutex
	pending map[string]chan struct{} // by pod; closed when done
	failed  map[string]error
	wg      sync.WaitGroup // Close waits for them
}

func newNetTeardowns() *netTeardowns {
	return &netTeardowns{pending: map[string]chan struct{}{}, failed: map[string]error{}}
}

// start runs finish for pod in the background, unless one already runs.
func (q *netTeardowns) start(pod string, finish func(context.Context) error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending[pod] != nil {
		return // the same teardown, still running
	}
	done := make(chan struct{})
	q.pending[pod] = done
	delete(q.failed, pod)
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		ctx, cancel := cleanupContext()
		err := finish(ctx)
		cancel()
		q.mu.Lock()
		delete(q.pending, pod)
		if err != nil {
			q.failed[pod] = err
		}
		q.mu.Unlock()
		close(done)
	}()
}

// wait returns when pod's teardown is done, with its error (then
// forgotten), or with ctx's.
func (q *netTeardowns) wait(ctx context.Context, pod string) error {
	q.mu.Lock()
	done := q.pending[pod]
	q.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.failed[pod]
	delete(q.failed, pod)
	return err
}

// waitAll returns when every teardown is done, or when ctx is.
func (q *netTeardowns) waitAll(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
