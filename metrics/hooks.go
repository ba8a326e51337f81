package metrics

import (
	"context"
	"time"

	"github.com/peapod-cri/peapod/network"
	"github.com/peapod-cri/peapod/sandbox"
)

// Network times each pod network setup of the backend it wraps; the rest
// of network.Backend (teardown, reconcile, readiness) passes through.
type Network struct {
	network.Backend
	M *Metrics
}

// SetupPod implements network.Backend.
func (n Network) SetupPod(ctx context.Context, pod network.Pod) (network.Result, error) {
	start := time.Now()
	res, err := n.Backend.SetupPod(ctx, pod)
	n.M.NetworkSetup(time.Since(start), err)
	return res, err
}

// Events counts OOM kills from the container exits the runtime publishes,
// then forwards every event.
type Events struct {
	Next sandbox.Events
	M    *Metrics
}

// Publish implements sandbox.Events.
func (e Events) Publish(ev sandbox.Event) {
	if ev.Type == sandbox.EventStopped && ev.Container != nil && ev.Container.Reason == "OOMKilled" {
		e.M.OOMKill()
	}
	if e.Next != nil {
		e.Next.Publish(ev)
	}
}
