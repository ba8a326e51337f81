package cri

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

// DefaultEventQueue is how many events may wait for one subscriber: enough
// for every container of a busy node to change state at once.
const DefaultEventQueue = 16384

var (
	// ErrSlowSubscriber ends a subscription whose queue is full: it is
	// better for kubelet to reconnect and relist than to miss an event.
	ErrSlowSubscriber = errors.New("event subscriber fell behind: its queue is full")
	errBusClosed      = errors.New("the runtime is shutting down")
)

// EventBus hands each pod and container event to every subscriber
// (sandbox.Events). Each subscriber has its own queue, so a slow one does
// not hold the others back, and Publish never blocks: it is called with a
// container's lock held. All subscribers see the events in one order.
type EventBus struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	limit  int
	closed bool
}

// NewEventBus returns a bus whose subscribers may have up to limit events
// queued.
func NewEventBus(limit int) *EventBus {
	return &EventBus{subs: map[*Subscription]struct{}{}, limit: limit}
}

// Subscription is one subscriber's queue of events.
type Subscription struct {
	bus   *EventBus
	queue []sandbox.Event // guarded by bus.mu
	err   error           // why the subscription ended; guarded by bus.mu
	wake  chan struct{}   // signalled when queue or err changes
}

// Publish queues ev for every subscriber. A subscriber whose queue is full
// is ended with ErrSlowSubscriber rather than silently missing ev.
func (b *EventBus) Publish(ev sandbox.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if len(s.queue) >= b.limit {
			s.endLocked(ErrSlowSubscriber)
			continue
		}
		s.queue = append(s.queue, ev)
		s.signal()
	}
}

// Subscribe returns a subscription that receives every event published from
// now on.
func (b *EventBus) Subscribe() *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &Subscription{bus: b, wake: make(chan struct{}, 1)}
	if b.closed {
		s.err = errBusClosed
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// Close ends every subscription, so that the streams serving them return
// and the gRPC server can stop gracefully.
func (b *EventBus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.endLocked(errBusClosed)
	}
}

func (s *Subscription) endLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.queue = nil
	delete(s.bus.subs, s)
	s.signal()
}

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next event, waiting for one. It fails when the
// subscription has ended or ctx is done.
func (s *Subscription) Next(ctx context.Context) (sandbox.Event, error) {
	for {
		s.bus.mu.Lock()
		if s.err != nil {
			err := s.err
			s.bus.mu.Unlock()
			return sandbox.Event{}, err
		}
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue[0] = sandbox.Event{}
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil // let the backing array go
			}
			s.bus.mu.Unlock()
			return ev, nil
		}
		s.bus.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return sandbox.Event{}, ctx.Err()
		}
	}
}

// Close unsubscribes.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	s.endLocked(errors.New("unsubscribed"))
}

// GetContainerEvents streams pod and container events for kubelet's evented
// PLEG. Each event carries its pod's status and the statuses of the pod's
// containers: the changed one as of the event, the others as of sending.
func (s *Service) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	if s.events == nil {
		return status.Error(codes.Unimplemented, "GetContainerEvents: the daemon has no event bus")
	}
	sub := s.events.Subscribe()
	defer sub.Close()
	// Headers go out once the subscription exists, so a client that waits
	// for them (stream.Header()) knows no later event can be missed.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		ev, err := sub.Next(stream.Context())
		switch {
		case errors.Is(err, ErrSlowSubscriber):
			s.log.Warn("event subscriber fell behind; ending its stream")
			return status.Error(codes.ResourceExhausted, err.Error())
		case errors.Is(err, errBusClosed):
			return status.Error(codes.Unavailable, err.Error())
		case err != nil:
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(s.eventResponse(ev)); err != nil {
			return err
		}
	}
}

func (s *Service) eventResponse(ev sandbox.Event) *runtimeapi.ContainerEventResponse {
	resp := &runtimeapi.ContainerEventResponse{
		ContainerId:        ev.ID(),
		ContainerEventType: eventType(ev.Type),
		CreatedAt:          ev.At,
	}
	if ev.Pod.Config != nil {
		resp.PodSandboxStatus = podStatus(&ev.Pod)
	}
	if ev.Container != nil {
		resp.ContainersStatuses = append(resp.ContainersStatuses, containerStatus(ev.Container))
	}
	for _, c := range s.runtime.Containers() {
		if c.PodID == ev.Pod.ID && (ev.Container == nil || c.ID != ev.Container.ID) {
			resp.ContainersStatuses = append(resp.ContainersStatuses, containerStatus(&c))
		}
	}
	return resp
}

func eventType(t sandbox.EventType) runtimeapi.ContainerEventType {
	switch t {
	case sandbox.EventStarted:
		return runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	case sandbox.EventStopped:
		return runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
	case sandbox.EventDeleted:
		return runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
	}
	return runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
}
