package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestNetTeardowns: wait returns once the pod's teardown is done (not
// another pod's), a second start while one runs does not run another, a
// failure is returned once by wait, and waitAll waits for all.
func TestNetTeardowns(t *testing.T) {
	q := newNetTeardowns()
	release := make(chan struct{})
	runs := make(chan string, 4)
	held := func(pod string, err error) func(context.Context) error {
		return func(context.Context) error { runs <- pod; <-release; return err }
	}
	q.start("p1", held("p1", nil))
	q.start("p1", held("p1-again", nil)) // one runs: not started
	q.start("p2", held("p2", errors.New("veth busy")))

	waited := make(chan error, 1)
	go func() { waited <- q.wait(context.Background(), "p1") }()
	select {
	case err := <-waited:
		t.Fatalf("wait returned before the teardown finished: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := q.wait(short, "p2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with an expiring context: %v", err)
	}
	close(release)
	if err := <-waited; err != nil {
		t.Errorf("wait p1: %v", err)
	}
	if !q.waitAll(context.Background()) {
		t.Fatal("waitAll did not return true")
	}
	if err := q.wait(context.Background(), "p2"); err == nil || err.Error() != "veth busy" {
		t.Errorf("wait p2: %v, want its failure", err)
	}
	if err := q.wait(context.Background(), "p2"); err != nil {
		t.Errorf("second wait p2: %v, want the failure forgotten", err)
	}
	close(runs)
	var got []string
	for p := range runs {
		got = append(got, p)
	}
	if len(got) != 2 {
		t.Errorf("teardowns run: %v, want p1 and p2 once each", got)
	}
}
