package removals

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitAndFailed: Wait returns once the pod's pending removals finish
// (not another pod's, nor one added after the call), and a failed removal
// is kept for its pod until taken, and again after Refail.
func TestWaitAndFailed(t *testing.T) {
	q := New()
	a := q.Add("p1", "c1", "/b1")
	other := q.Add("p2", "c2", "/b2")
	waited := make(chan error, 1)
	go func() { waited <- q.Wait(context.Background(), "p1") }()
	time.Sleep(20 * time.Millisecond)
	later := q.Add("p1", "c3", "/b3") // added after Wait began: not waited for
	select {
	case err := <-waited:
		t.Fatalf("Wait returned before the removal finished: %v", err)
	default:
	}
	a.Err = errors.New("busy")
	q.Finish(a)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the pod's removal finished")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Wait(ctx, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with pending removals = %v, want the context's deadline", err)
	}
	q.Finish(other)
	q.Finish(later)

	f := q.TakeFailed("p1")
	if len(f) != 1 || f[0].ID != "c1" || f[0].Bundle != "/b1" {
		t.Fatalf("failed of p1 = %+v, want c1 only", f)
	}
	if f := q.TakeFailed("p1"); len(f) != 0 {
		t.Fatalf("failed taken twice: %+v", f)
	}
	q.Refail(f[0], errors.New("still busy"))
	if f := q.TakeFailed("p1"); len(f) != 1 || f[0].Err == nil || f[0].Err.Error() != "still busy" {
		t.Fatalf("refailed removal = %+v", f)
	}
	if f := q.TakeFailed("p2"); len(f) != 0 {
		t.Fatalf("a successful removal kept as failed: %+v", f)
	}
}
