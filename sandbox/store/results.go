package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// How long a result whose caller has gone is kept for a retry, and how long
// an operation may run once it is detached from its caller.
const (
	resultKeep = 2 * time.Minute
	detachedOp = 10 * time.Minute
)

// Results lets RunPodSandbox and CreateContainer outlive their caller,
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
type Results[T any] struct {
	mu  sync.Mutex
	ops map[string]*operation[T] // by name
	wg  sync.WaitGroup           // detached operations still running
	now func() time.Time
	// closing is cancelled at shutdown: it cancels the detached
	// operations' contexts, so that none keeps the daemon from exiting.
	closing context.Context
	close   context.CancelFunc
	// reserved is the error a call for a reserved name wraps.
	reserved error
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

// NewResults returns an empty store; a call for a name that is reserved by
// another request fails with an error that wraps reserved.
func NewResults[T any](reserved error) *Results[T] {
	closing, close := context.WithCancel(context.Background())
	return &Results[T]{ops: map[string]*operation[T]{}, now: time.Now, closing: closing, close: close, reserved: reserved}
}

// Do runs op for name, detached from ctx, and returns its result; or, if
// an earlier call for name with the same request is running or left a
// result, that one's (joined is then true). A call for name with a
// different request, while the earlier one is pending, fails with
// the reserved error. When ctx ends first, Do returns ctx's error and the
// result is kept for a retry.
func (s *Results[T]) Do(ctx context.Context, name, request string, op func(context.Context) (T, error)) (_ T, joined bool, _ error) {
	s.mu.Lock()
	s.expireLocked()
	o, ok := s.ops[name]
	if ok && o.request != request {
		s.mu.Unlock()
		var zero T
		return zero, false, fmt.Errorf("name %q is reserved by an earlier request that is still pending, with another config: %w", name, s.reserved)
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
func (s *Results[T]) run(ctx context.Context, name string, o *operation[T], op func(context.Context) (T, error)) {
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
func (s *Results[T]) expireLocked() {
	for name, o := range s.ops {
		if o.finished && o.waiters == 0 && s.now().Sub(o.orphaned) > resultKeep {
			delete(s.ops, name)
		}
	}
}

// Wait waits for the detached operations to finish.
func (s *Results[T]) Wait() { s.wg.Wait() }

// Shutdown cancels the detached operations and waits for them to finish
// (each undoes its steps), so that none writes to a closed metadata store;
// but no longer than ctx allows: it reports false when some are still
// running. Those are then cut short by the daemon's exit, as by a crash,
// which the next start reconciles.
func (s *Results[T]) Shutdown(ctx context.Context) bool {
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
