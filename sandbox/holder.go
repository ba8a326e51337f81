package sandbox

import (
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
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

// watchHolder publishes a pod event when the holder of a ready pod exits,
// as the kubelet's evented PLEG needs; status calls notice it anyway
// (refresh). A pidfd registered with Go's poller costs no thread while it
// waits. The caller holds p.mu (or has the pod to itself).
func (r *Runtime) watchHolder(p *pod) {
	if p.PIDHolder <= 0 || p.State != PodReady {
		return
	}
	fd, err := unix.PidfdOpen(p.PIDHolder, unix.PIDFD_NONBLOCK)
	if err != nil {
		return // gone already: refresh reports it
	}
	// The pidfd names whatever process has the PID now: it is the holder
	// only if the start time still matches after the open.
	if !proc.Alive(p.PIDHolder, p.HolderStart) {
		unix.Close(fd)
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	go func() {
		defer f.Close()
		if rc, err := f.SyscallConn(); err == nil {
			// A pidfd is readable once the process exits; the callback
			// returns false (wait for the poller) until then.
			rc.Read(func(fd uintptr) bool {
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				n, err := unix.Poll(pfd, 0)
				return err != nil || n > 0
			})
		}
		r.holderExited(p)
	}()
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
// a peapod from before it was recorded: the holder is taken to be the
// process with the recorded PID only if it is still the keeper's child in
// namespaces other than the keeper's; otherwise the start time stays 0,
// which no process has, and the pod is NotReady.
func recoverHolderStart(p *Pod) {
	if p.PIDHolder <= 0 || p.HolderStart != 0 || !proc.Alive(p.PausePID, p.PauseStart) {
		return
	}
	if proc.ParentPID(p.PIDHolder) != p.PausePID {
		return
	}
	kind := "pid"
	if oci.PodUserns(p.Config) != nil {
		kind = "user"
	}
	keeper, err1 := os.Readlink("/proc/" + strconv.Itoa(p.PausePID) + "/ns/" + kind)
	holder, err2 := os.Readlink("/proc/" + strconv.Itoa(p.PIDHolder) + "/ns/" + kind)
	if err1 != nil || err2 != nil || keeper == holder {
		return
	}
	start, err := proc.StartTime(p.PIDHolder)
	if err == nil && proc.ParentPID(p.PIDHolder) == p.PausePID {
		p.HolderStart = start
	}
}
