package sandbox

import (
	"github.com/peapod-cri/peapod/sandbox/proc"
)

// A ready pod lives as long as its keeper (the pause) and, when it has
// one, its namespace holder. ListPodSandbox and every status call ask
// (refresh), hundreds of times a second on a busy node, so the answer
// comes from memory: each exit is noticed once, when it happens, by the
// keeper's reaper (pauseExited) or a pidfd watch (proc.OnExit), both
// pidfds in sandbox/proc's one exit watcher (one epoll, one goroutine for
// all pods; a watch costs no goroutine and no thread), and refresh only
// reads the flags. A watch that comes too late (the process is gone
// already) sets its flag at once. The watches' callbacks run on a
// goroutine of their own (holderExited takes p.mu), so one pod's held
// mutex stalls no other pod's watch.

// pauseGoneReason is why a pod whose keeper exited is not ready.
const pauseGoneReason = "the pod's pause process exited"

// watchPod watches the keeper and holder of a ready pod; the caller holds
// p.mu (or has the pod to itself).
func (r *Runtime) watchPod(p *pod) {
	r.watchKeeper(p)
	r.watchHolder(p)
}

// watchKeeper watches the keeper of a ready pod recovered after a
// restart; the reaper of one this daemon started closes pauseExited.
func (r *Runtime) watchKeeper(p *pod) {
	if p.State != PodReady || p.pauseExited != nil {
		return
	}
	gone, err := proc.OnExit(p.PausePID, p.PauseStart, func() { p.keeperGone.Store(true) })
	if gone {
		p.keeperGone.Store(true)
	} else if err != nil {
		r.log.Warn("cannot watch the pod's keeper for its exit", "pod", p.ID, "pid", p.PausePID, "err", err)
	}
}

// keeperExited tells, from memory, whether the pod's keeper is known to
// have exited.
func (p *pod) keeperExited() bool {
	if p.keeperGone.Load() {
		return true
	}
	select {
	case <-p.pauseExited: // nil for a recovered pod: never ready
		return true
	default:
		return false
	}
}

// refresh notices a pause process or namespace holder that died on its
// own. It reads no /proc file, except once when the holder's exit is
// noticed: the keeper's death kills the holder too, and its exit may be
// seen first; the reason must then still name the pause.
func (p *pod) refresh() {
	if p.State != PodReady {
		return
	}
	if p.keeperExited() {
		p.State, p.NotReadyReason = PodNotReady, pauseGoneReason
	} else if p.holderGone.Load() {
		if !proc.Alive(p.PausePID, p.PauseStart) {
			p.State, p.NotReadyReason = PodNotReady, pauseGoneReason
			return
		}
		p.State, p.NotReadyReason = PodNotReady, p.holderGoneReason()
	}
}
