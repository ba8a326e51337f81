package sandbox

import (
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/proc"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The namespace holder (sandbox/pause/pause.c) is PID 1 of a pod's shared
// PID namespace and the owner of a user-namespaced pod's user namespace. If
// it exits (killed from the host, or it broke), the pod can start no
// container any more: the pod becomes NotReady, with a reason and a pod
// event, so that the kubelet recreates it. Its PID is known together with
// its start time, so that a process that later gets the number is never
// taken for it; containers join its namespaces through the keeper's
// descriptors, never through /proc/<holder> (sandbox/runner/holderns.go).

// holderGoneReason is why a pod whose holder exited is not ready.
func (p *pod) holderGoneReason() string {
	if p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD {
		return "the pod's PID namespace holder exited"
	}
	return "the pod's user namespace holder exited"
}

// watchHolder notes when the holder of a ready pod exits (refresh reads
// it) and publishes a pod event then, as the kubelet's evented PLEG needs.
// A holder gone before the watch makes the pod NotReady without an event,
// as before the watch was the only way to notice. The caller holds p.mu
// (or has the pod to itself).
func (r *Runtime) watchHolder(p *pod) {
	if p.PIDHolder <= 0 || p.State != PodReady {
		return
	}
	gone, err := proc.OnExit(p.PIDHolder, p.HolderStart, func() {
		p.holderGone.Store(true)
		r.holderExited(p)
	})
	switch {
	case gone:
		p.holderGone.Store(true)
		r.log.Warn("pod is not ready: its namespace holder is gone", "pod", p.ID, "holder_pid", p.PIDHolder)
	case err != nil:
		r.log.Warn("cannot watch the pod's namespace holder for its exit", "pod", p.ID, "holder_pid", p.PIDHolder, "err", err)
	}
}

// holderExited marks the pod NotReady and publishes its stopped event,
// once, unless the pod was stopped (or its pause died) first.
func (r *Runtime) holderExited(p *pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh()
	if p.State != PodNotReady || p.NotReadyReason != p.holderGoneReason() || p.holderEventSent {
		return
	}
	p.holderEventSent = true
	r.log.Warn("pod is not ready", "pod", p.ID, "reason", p.NotReadyReason, "holder_pid", p.PIDHolder)
	r.publishPod(EventStopped, &p.Pod)
}

// recoverHolderStart fills in the holder's start time of a pod recorded by
// a peapod from before it was recorded (keeper.HolderStart); a holder that
// is not recognised keeps 0, which no process has, and the pod is NotReady.
func recoverHolderStart(p *Pod) {
	if p.PIDHolder <= 0 || p.HolderStart != 0 {
		return
	}
	kind := "pid"
	if oci.PodUserns(p.Config) != nil {
		kind = "user"
	}
	p.HolderStart = keeper.HolderStart(p.PausePID, p.PauseStart, p.PIDHolder, kind)
}
