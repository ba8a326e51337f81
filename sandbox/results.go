package sandbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// How long a result whose caller has gone is kept for a retry, and how long
// an operation may run once it is detached from its caller.
const (
	resultKeep = 2 * time.Minute
	detachedOp = 10 * time.Minute
)

// resultStore lets RunPodSandbox and CreateContainer outlive their caller,
// the way CRI-O's resourcestore does. kubelet gives up on a slow call and
// retries it with the same name: the work goes on detached from the caller,
// and a retry with the same name and the same request joins it and gets its
// result, where it would otherwise get "name is reserved".
//
// A result nobody claims within resultKeep is forgotten, but what it made
// is kept, as CRI-O does: the pod or container is an ordinary one that
// kubelet sees when it lists, adopts, or removes as an orphan. Cleaning it
// up instead (containerd) would remove a pod kubelet may already have
// adopted from a list. A failed operation has undone its own steps.
type resultStore[T any] struct {
	mu  sync.Mutex
	ops map[string]*operation[T] // by name
	wg  sync.WaitGroup           // detached operations still running
	now func() time.Time
	// closing is cancelled at shutdown: it cancels the detached
	// operations' contexts, so that none keeps the daemon from exiting.
	closing context.Context
	close   context.CancelFunc
}

type operation[T any] struct {
	request  string        // what was asked, to tell a retry from another request
	done     chan struct{} // closed when val and err are set
	val      T
	err      error
	finished bool
	orphaned time.Time // since when no caller waits for the result; zero while one waits
	waiters  int
}

func newResultStore[T any]() *resultStore[T] {
	closing, close := context.WithCancel(context.Background())
	return &resultStore[T]{ops: map[string]*operation[T]{}, now: time.Now, closing: closing, close: close}
}

// do runs op for name, detached from ctx, and returns its result; or, if
// an earlier call for name with the same request is running or left a
// result, that one's (joined is then true). A call for name with a
// different request, while the earlier one is pending, fails with
// ErrAlreadyExists. When ctx ends first, do returns ctx's error and the
// result is kept for a retry.
func (s *resultStore[T]) do(ctx context.Context, name, request string, op func(context.Context) (T, error)) (_ T, joined bool, _ error) {
	s.mu.Lock()
	s.expireLocked()
	o, ok := s.ops[name]
	if ok && o.request != request {
		s.mu.Unlock()
		var zero T
		return zero, false, fmt.Errorf("name %q is reserved by an earlier request that is still pending, with another config: %w", name, ErrAlreadyExists)
	}
	joined = ok
	if !ok {
		o = &operation[T]{request: request, done: make(chan struct{})}
		s.ops[name] = o
		s.wg.Add(1)
		go s.run(ctx, name, o, op)
	}
	o.waiters++
	o.orphaned = time.Time{}
	s.mu.Unlock()

	select {
	case <-o.done:
	case <-ctx.Done():
		select {
		case <-o.done: // both are ready: the result wins
		default:
			s.mu.Lock()
			o.waiters--
			if o.waiters == 0 {
				o.orphaned = s.now()
			}
			s.mu.Unlock()
			var zero T
			return zero, joined, fmt.Errorf("%w (the operation goes on; a retry with the same name gets its result)", ctx.Err())
		}
	}
	s.mu.Lock()
	o.waiters--
	// The result has been handed over: the next call with this name is a
	// new request.
	if s.ops[name] == o {
		delete(s.ops, name)
	}
	s.mu.Unlock()
	return o.val, joined, o.err
}

// run is the detached operation; it keeps ctx's values, not its deadline.
func (s *resultStore[T]) run(ctx context.Context, name string, o *operation[T], op func(context.Context) (T, error)) {
	defer s.wg.Done()
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), detachedOp)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	val, err := op(octx)
	s.mu.Lock()
	o.val, o.err, o.finished = val, err, true
	if o.waiters == 0 {
		if err != nil {
			delete(s.ops, name) // undone: a retry starts afresh
		} else {
			o.orphaned = s.now()
		}
	}
	s.mu.Unlock()
	close(o.done)
}

// expireLocked forgets results nobody claimed in time.
func (s *resultStore[T]) expireLocked() {
	for name, o := range s.ops {
		if o.finished && o.waiters == 0 && s.now().Sub(o.orphaned) > resultKeep {
			delete(s.ops, name)
		}
	}
}

// wait waits for the detached operations to finish.
func (s *resultStore[T]) wait() { s.wg.Wait() }

// shutdown cancels the detached operations and waits for them to finish
// (each undoes its steps), so that none writes to a closed metadata store;
// but no longer than ctx allows: it reports false when some are still
// running. Those are then cut short by the daemon's exit, as by a crash,
// which the next start reconciles.
func (s *resultStore[T]) shutdown(ctx context.Context) bool {
	s.close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// RunPod creates a pod (runPod) detached from ctx, so that kubelet's retry
// after a deadline gets the pod instead of "name is reserved".
func (r *Runtime) RunPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (Pod, error) {
	if err := validatePodConfig(cfg); err != nil {
		return Pod{}, err
	}
	req, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return Pod{}, fmt.Errorf("encode pod config: %v: %w", err, ErrInvalidArgument)
	}
	name := podName(cfg)
	p, joined, err := r.podOps.do(ctx, name, handler+"\x00"+string(req), func(ctx context.Context) (Pod, error) {
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
		return r.createContainer(ctx, podID, cfg, img) // fails, saying why
	}
	p.mu.Lock()
	podID, podCfg := p.ID, p.Config
	p.mu.Unlock()
	req, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return Container{}, fmt.Errorf("encode container config: %v: %w", err, ErrInvalidArgument)
	}
	name := containerName(podCfg, cfg)
	c, joined, err := r.ctrOps.do(ctx, name, podID+"\x00"+img.ID+"\x00"+string(req), func(ctx context.Context) (Container, error) {
		return r.createContainer(ctx, podID, cfg, img)
	})
	switch {
	case ctx.Err() != nil && err != nil:
		r.log.Info("caller left before the container was created; it is kept for a retry", "name", name, "err", ctx.Err())
	case joined && err == nil:
		r.log.Info("container handed to a retry", "container", c.ID, "name", name)
	}
	return c, err
}
