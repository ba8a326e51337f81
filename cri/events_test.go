package cri

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/sandbox"
)

func event(id string, t sandbox.EventType) sandbox.Event {
	return sandbox.Event{Type: t, Pod: sandbox.Pod{ID: "pod"}, Container: &sandbox.Container{ID: id}}
}

func next(t *testing.T, s *Subscription) (sandbox.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Next(ctx)
}

// Every subscriber sees every event, in the order of publishing, while
// many containers publish at once.
func TestEventBusSubscribersSeeEveryEventInOrder(t *testing.T) {
	const containers, perContainer = 50, 4
	bus := NewEventBus(DefaultEventQueue)
	subs := []*Subscription{bus.Subscribe(), bus.Subscribe(), bus.Subscribe()}
	var wg sync.WaitGroup
	for i := range containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for et := range perContainer {
				bus.Publish(event(fmt.Sprint(i), sandbox.EventType(et)))
			}
		}()
	}
	var order [][]string
	for _, s := range subs {
		got := map[string][]sandbox.EventType{}
		var seq []string
		for range containers * perContainer {
			ev, err := next(t, s)
			if err != nil {
				t.Fatalf("next: %v", err)
			}
			got[ev.ID()] = append(got[ev.ID()], ev.Type)
			seq = append(seq, fmt.Sprint(ev.ID(), ev.Type))
		}
		for id, types := range got {
			for i, et := range types {
				if et != sandbox.EventType(i) {
					t.Fatalf("container %s: events %v, want created, started, stopped, deleted", id, types)
				}
			}
		}
		if len(got) != containers {
			t.Fatalf("events of %d containers, want %d", len(got), containers)
		}
		order = append(order, seq)
	}
	wg.Wait()
	for i := 1; i < len(order); i++ {
		if fmt.Sprint(order[i]) != fmt.Sprint(order[0]) {
			t.Fatalf("subscriber %d saw another order than subscriber 0", i)
		}
	}
}

// A subscriber that falls behind is ended with an error; the others go on.
func TestEventBusSlowSubscriberIsEnded(t *testing.T) {
	bus := NewEventBus(3)
	slow, fast := bus.Subscribe(), bus.Subscribe()
	for i := range 5 {
		bus.Publish(event(fmt.Sprint(i), sandbox.EventCreated))
		if _, err := next(t, fast); err != nil {
			t.Fatalf("fast subscriber: %v", err)
		}
	}
	if _, err := next(t, slow); !errors.Is(err, ErrSlowSubscriber) {
		t.Fatalf("slow subscriber: err %v, want ErrSlowSubscriber", err)
	}
	bus.Publish(event("x", sandbox.EventCreated))
	if ev, err := next(t, fast); err != nil || ev.ID() != "x" {
		t.Fatalf("fast subscriber after the slow one ended: %v, %v", ev.ID(), err)
	}
}

func TestEventBusClose(t *testing.T) {
	bus := NewEventBus(10)
	s := bus.Subscribe()
	done := make(chan error, 1)
	go func() { _, err := s.Next(context.Background()); done <- err }()
	bus.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errBusClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still waits after Close")
	}
	if _, err := next(t, bus.Subscribe()); !errors.Is(err, errBusClosed) {
		t.Fatalf("subscribe after Close: %v", err)
	}
}

func TestEventBusUnsubscribe(t *testing.T) {
	bus := NewEventBus(10)
	s := bus.Subscribe()
	s.Close()
	bus.Publish(event("a", sandbox.EventCreated))
	if len(bus.subs) != 0 {
		t.Fatalf("%d subscriptions after Close, want 0", len(bus.subs))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bus.Subscribe().Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
}
