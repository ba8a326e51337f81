package sandbox

import "time"

// EventType is what happened to a container or a pod sandbox.
type EventType int

const (
	EventCreated EventType = iota
	EventStarted
	EventStopped
	EventDeleted
)

func (t EventType) String() string {
	switch t {
	case EventCreated:
		return "created"
	case EventStarted:
		return "started"
	case EventStopped:
		return "stopped"
	case EventDeleted:
		return "deleted"
	}
	return "unknown"
}

// Event reports a change of a container, or of a pod sandbox when
// Container is nil (as containerd does, for kubelet's evented PLEG). It is
// published once the change is saved and visible through Container and Pod,
// and the events of one container or pod are published in order.
type Event struct {
	Type      EventType
	At        int64      // unix nanoseconds
	Pod       Pod        // the pod as of the event
	Container *Container // the container as of the event; nil for a pod event
}

// ID is the container's ID, or the pod's for a pod event.
func (e Event) ID() string {
	if e.Container != nil {
		return e.Container.ID
	}
	return e.Pod.ID
}

// Events receives the events of pods and containers. Publish is called with
// the container's (or pod's) lock held, which is what keeps events in order:
// it must not block, nor call back into the Runtime.
type Events interface {
	Publish(Event)
}

type noEvents struct{}

func (noEvents) Publish(Event) {}

// publishContainer reports a change of c; the caller holds c.mu and has
// already saved the change. The pod's lock is taken after the container's,
// the order the rest of the package uses.
func (r *Runtime) publishContainer(t EventType, c *Container) {
	ev := Event{Type: t, At: time.Now().UnixNano(), Pod: Pod{ID: c.PodID}}
	r.mu.RLock()
	p := r.pods[c.PodID]
	r.mu.RUnlock()
	if p != nil {
		p.mu.Lock()
		p.refresh()
		ev.Pod = p.Pod
		p.mu.Unlock()
	}
	cc := *c
	ev.Container = &cc
	r.events().Publish(ev)
}

// publishPod reports a change of p; the caller holds p.mu.
func (r *Runtime) publishPod(t EventType, p *Pod) {
	r.events().Publish(Event{Type: t, At: time.Now().UnixNano(), Pod: *p})
}

func (r *Runtime) events() Events {
	if r.opts.Events == nil {
		return noEvents{}
	}
	return r.opts.Events
}
