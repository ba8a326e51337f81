package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// gate is an operation that runs until released, counting its runs.
type gate struct {
	release chan struct{}
	runs    atomic.Int32
	err     error
}

// errReserved stands for the caller's "already exists".
var errReserved = errors.New("already exists")

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) op(ctx context.Context) (string, error) {
	n := g.runs.Add(1)
	<-g.release
	if g.err != nil {
		return "", g.err
	}
	return "id" + string(rune('0'+n)), nil
}

func expired() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	<-ctx.Done()
	return ctx, cancel
}

func TestResultStoreCallerWaits(t *testing.T) {
	s := NewResults[string](errReserved)
	g := newGate()
	close(g.release)
	v, joined, err := s.Do(context.Background(), "a", "req", g.op)
	if v != "id1" || joined || err != nil {
		t.Fatalf("do = %q, %v, %v", v, joined, err)
	}
	if len(s.ops) != 0 {
		t.Fatalf("a claimed result is still kept: %v", s.ops)
	}
}

// The kubelet case: the caller's deadline passes mid-way, the work goes
// on, and the retry gets its result, once; the next call is a new one.
func TestResultStoreRetryGetsResultOfCallerThatLeft(t *testing.T) {
	s := NewResults[string](errReserved)
	g := newGate()
	ctx, cancel := expired()
	defer cancel()
	if _, _, err := s.Do(ctx, "a", "req", g.op); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first call: err %v, want DeadlineExceeded", err)
	}
	// A retry while the work runs waits for it.
	got := make(chan string, 1)
	go func() {
		v, joined, err := s.Do(context.Background(), "a", "req", g.op)
		if !joined || err != nil {
			v = "not joined: " + v
		}
		got <- v
	}()
	time.Sleep(20 * time.Millisecond)
	close(g.release)
	if v := <-got; v != "id1" {
		t.Fatalf("retry got %q, want the first call's id1", v)
	}
	if v, joined, _ := s.Do(context.Background(), "a", "req", g.op); v != "id2" || joined {
		t.Fatalf("call after the result was claimed = %q, %v; want a new run", v, joined)
	}
	if g.runs.Load() != 2 {
		t.Fatalf("%d runs, want 2", g.runs.Load())
	}
}

func TestResultStoreRetryAfterTheWorkFinished(t *testing.T) {
	s := NewResults[string](errReserved)
	g := newGate()
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", g.op)
	close(g.release)
	s.Wait()
	v, joined, err := s.Do(context.Background(), "a", "req", g.op)
	if v != "id1" || !joined || err != nil || g.runs.Load() != 1 {
		t.Fatalf("retry = %q, %v, %v after %d runs; want id1 from the one run", v, joined, err, g.runs.Load())
	}
}

func TestResultStoreOtherRequestWithSameName(t *testing.T) {
	s := NewResults[string](errReserved)
	g := newGate()
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", g.op)
	if _, _, err := s.Do(context.Background(), "a", "other", g.op); !errors.Is(err, errReserved) {
		t.Fatalf("other request: err %v, want errReserved", err)
	}
	close(g.release)
	s.Wait()
}

// A failed operation has undone itself: the retry runs it again.
func TestResultStoreFailedWorkIsNotKept(t *testing.T) {
	s := NewResults[string](errReserved)
	g := newGate()
	g.err = errors.New("boom")
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", g.op)
	close(g.release)
	s.Wait()
	if len(s.ops) != 0 {
		t.Fatalf("a failed operation is kept: %v", s.ops)
	}
	if _, joined, err := s.Do(context.Background(), "a", "req", g.op); joined || err == nil || g.runs.Load() != 2 {
		t.Fatalf("retry after failure: joined %v, err %v, %d runs", joined, err, g.runs.Load())
	}
}

func TestResultStoreForgetsUnclaimedResults(t *testing.T) {
	s := NewResults[string](errReserved)
	now := time.Now()
	s.now = func() time.Time { return now }
	g := newGate()
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", g.op)
	close(g.release)
	s.Wait()
	now = now.Add(resultKeep + time.Second)
	if v, joined, _ := s.Do(context.Background(), "a", "req", g.op); joined || v != "id2" {
		t.Fatalf("call after resultKeep = %q, joined %v; want a new run", v, joined)
	}
}

// A long operation is not forgotten while it still runs.
func TestResultStoreKeepsRunningWork(t *testing.T) {
	s := NewResults[string](errReserved)
	now := time.Now()
	s.now = func() time.Time { return now }
	g := newGate()
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", g.op)
	now = now.Add(resultKeep + time.Second)
	go func() { time.Sleep(20 * time.Millisecond); close(g.release) }()
	if v, joined, err := s.Do(context.Background(), "a", "req", g.op); v != "id1" || !joined || err != nil {
		t.Fatalf("retry = %q, %v, %v; want id1", v, joined, err)
	}
}

// Shutdown cancels a detached operation whose caller has gone and waits
// for it, but never longer than its bound for one that ignores the
// cancellation.
func TestResultStoreShutdown(t *testing.T) {
	s := NewResults[string](errReserved)
	ctx, cancel := expired()
	defer cancel()
	s.Do(ctx, "a", "req", func(ctx context.Context) (string, error) {
		<-ctx.Done() // a well-behaved step: ends when cancelled
		return "", ctx.Err()
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if !s.Shutdown(wctx) {
		t.Fatal("shutdown did not see the cancelled operation finish")
	}

	s = NewResults[string](errReserved)
	g := newGate()
	defer close(g.release)
	s.Do(ctx, "b", "req", g.op) // ignores its context
	wctx, wcancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer wcancel()
	start := time.Now()
	if s.Shutdown(wctx) {
		t.Fatal("shutdown reported a stuck operation finished")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}
