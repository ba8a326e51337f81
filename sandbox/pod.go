package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/names"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/network"
)

type pod struct {
	mu sync.Mutex // serialises lifecycle operations on this pod
	Pod
	pauseExited     <-chan struct{} // closed when the pause we started has been reaped
	keeperGone      atomic.Bool     // a recovered pod's keeper exited (liveness.go)
	holderGone      atomic.Bool     // the holder exited (liveness.go)
	holderEventSent bool            // the holder's exit was published (holder.go)
	nriStopped      nriOnce         // its NRI StopPodSandbox hook ran (nri.go)
	// netDetached: a stop detached the pod's network, so a later stop
	// (the kubelet repeats them; RemovePodSandbox stops first) does not run
	// CNI DEL again. In memory only: at a start, the network of every pod
	// that is not Ready is released (reconcileNetwork).
	netDetached bool
}

// runPod creates the pod's namespaces with a pause process and records the
// pod. Each step registers its undo right after it succeeds.
func (r *Runtime) runPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ Pod, retErr error) {
	if err := r.validatePodRequest(cfg, handler); err != nil {
		return Pod{}, err
	}
	id := names.NewID()
	name := names.Pod(cfg)
	if err := r.podNames.Reserve(name, id); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", name, err)
	}
	var undo []func()
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() { r.podNames.Release(name) })

	p, err := r.newPod(id, name, cfg, handler)
	if err != nil {
		return Pod{}, err
	}
	// Recorded before anything is made, so that a crash mid-way leaves a
	// record for recovery to clean up after (reconcile.go).
	p.Creating = true
	if err := r.savePod(&p.Pod); err != nil {
		return Pod{}, fmt.Errorf("save pod %s: %w", id, err)
	}
	undo = append(undo, func() { r.store.Delete(store.Pods, id) })
	r.fail.Crash("run-pod-after-record")
	undoFiles, err := hostfs.MakePodFiles(p.Dir, p.Config)
	if err != nil {
		return Pod{}, err
	}
	undo = append(undo, undoFiles)
	r.fail.Crash("run-pod-after-files")
	if err := r.startPauseInCgroup(p, &undo); err != nil {
		return Pod{}, err
	}
	r.fail.Crash("run-pod-after-pause")
	if err := r.setupPodNetwork(ctx, p, &undo); err != nil {
		return Pod{}, err
	}
	r.fail.Crash("run-pod-after-network")
	// Until the pod is listed, a plugin connecting now is not synchronized:
	// it would miss the pod otherwise (neither hook nor list).
	unblock := r.plugins().BlockSync()
	defer unblock()
	if err := r.runPodHook(ctx, p, &undo); err != nil {
		return Pod{}, err
	}
	p.State = PodReady
	p.Creating = false
	if err := r.savePod(&p.Pod); err != nil {
		return Pod{}, fmt.Errorf("save pod %s: %w", id, err)
	}
	r.fail.Crash("run-pod-after-save")
	r.addReadyPod(p)
	r.log.Info("pod ready", "pod", names.PodLog(cfg), "pod_id", id, "pause_pid", p.PausePID, "holder_pid", p.PIDHolder)
	return p.Pod, nil
}

// runPodHook tells the NRI plugins of the pod before it is listed; one
// that fails it fails RunPodSandbox. Its undo tells them the pod went.
func (r *Runtime) runPodHook(ctx context.Context, p *pod, undo *[]func()) error {
	pl := r.plugins()
	if !pl.Active() {
		return nil
	}
	pp := p.Pod
	pp.State = PodReady
	if err := pl.RunPod(ctx, &pp); err != nil {
		cctx, cancel := cleanupContext()
		defer cancel()
		pl.RemovePod(cctx, &pp) // a plugin before the failing one may have allocated for it
		return fmt.Errorf("run pod %s: %w", p.ID, pluginError("RunPodSandbox", err))
	}
	*undo = append(*undo, func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		pl.StopPod(cctx, &pp)
		pl.RemovePod(cctx, &pp)
	})
	return nil
}

// notifyPodStopped runs the pod's StopPodSandbox hook once, after its
// containers stopped and before its pause and network go; the pod stays
// listed meanwhile. The caller holds no lock of the pod.
func (r *Runtime) notifyPodStopped(p *pod) {
	p.nriStopped.once.Do(func() {
		pl := r.plugins()
		if !pl.Active() {
			return
		}
		p.mu.Lock()
		pp := p.Pod
		p.mu.Unlock()
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := pl.StopPod(ctx, &pp); err != nil {
			r.log.Warn("NRI StopPodSandbox", "pod", pp.ID, "err", err)
		}
	})
}

// validatePodRequest refuses, before anything is reserved or made, a pod
// config or runtime handler peapod cannot run.
func (r *Runtime) validatePodRequest(cfg *runtimeapi.PodSandboxConfig, handler string) error {
	if err := oci.ValidatePod(cfg); err != nil {
		return err
	}
	if err := r.checkUsernsSupport(cfg); err != nil {
		return err
	}
	if !r.knownHandler(handler) {
		return fmt.Errorf("runtime handler %q: not configured (runtime_handlers lists the handlers besides the default): %w", handler, ErrNotFound)
	}
	return r.checkHandlerFeatures(cfg, handler)
}

// newPod is the in-memory pod, not ready yet, with its directory and
// cgroup named (nothing made).
func (r *Runtime) newPod(id, name string, cfg *runtimeapi.PodSandboxConfig, handler string) (*pod, error) {
	p := &pod{Pod: Pod{
		ID:             id,
		Config:         cfg,
		RuntimeHandler: handler,
		CreatedAt:      time.Now().UnixNano(),
		State:          PodNotReady,
		Dir:            filepath.Join(r.opts.State, "pods", id),
		CgroupParent:   cfg.GetLinux().GetCgroupParent(),
	}}
	if p.CgroupParent == "" {
		p.CgroupParent = r.opts.CgroupParent
	}
	if cgroups.IsSystemdSlice(p.CgroupParent) && r.opts.CgroupDriver != "systemd" {
		return nil, fmt.Errorf("cgroup parent %q is a systemd slice but peapod's cgroup driver is %s; run kubelet with --cgroup-driver=%[2]s: %w",
			p.CgroupParent, r.opts.CgroupDriver, ErrInvalidArgument)
	}
	var err error
	if p.Cgroup, err = cgroups.PodPath(p.CgroupParent, id); err != nil {
		return nil, fmt.Errorf("run pod %s: %v: %w", name, err, ErrInvalidArgument)
	}
	return p, nil
}

// startPauseInCgroup makes the pod's cgroup while the pause starts (the
// pause starts in the daemon's cgroup and moves in below, AddPause), and
// appends the undo of each to undo.
func (r *Runtime) startPauseInCgroup(p *pod, undo *[]func()) error {
	cgroupMade := make(chan error, 1)
	go func() { cgroupMade <- cgroups.CreatePod(p.Cgroup, oci.PodLimits(p.Config.GetLinux())) }()
	pauseErr := r.startPause(p)
	if err := <-cgroupMade; err != nil {
		if pauseErr == nil {
			r.killPause(p)
		}
		return fmt.Errorf("run pod %s: %w", p.ID, err)
	}
	*undo = append(*undo, func() { r.removePodCgroup(p) })
	r.fail.Crash("run-pod-after-cgroup")
	if pauseErr != nil {
		return pauseErr
	}
	*undo = append(*undo, func() { r.killPause(p) }) // before the cgroup goes: it holds the pause
	if err := cgroups.AddPause(p.Cgroup, p.PausePID, p.PIDHolder); err != nil {
		return fmt.Errorf("run pod %s: %w", p.ID, err)
	}
	return nil
}

// setupPodNetwork gives a pod with its own network namespace its network
// (addresses recorded in p), and appends its teardown to undo.
func (r *Runtime) setupPodNetwork(ctx context.Context, p *pod, undo *[]func()) error {
	if oci.HostNetwork(p.Config) || r.opts.Network == nil {
		return nil
	}
	res, err := r.opts.Network.SetupPod(ctx, p.networkPod())
	if errors.Is(err, network.ErrPortConflict) {
		// The node's state, not the request: another pod holds the port.
		err = fmt.Errorf("%w: %w", ErrFailedPrecondition, err)
	}
	if err != nil {
		return fmt.Errorf("set up network of pod %s: %w", p.ID, err)
	}
	for _, ip := range res.IPs {
		p.IPs = append(p.IPs, ip.String())
	}
	p.NetworkBackend = res.Backend
	*undo = append(*undo, func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		r.opts.Network.TeardownPod(cctx, p.networkPod())
	})
	return nil
}

// addReadyPod makes the recorded, ready pod known, publishes its events
// and watches its keeper and holder.
func (r *Runtime) addReadyPod(p *pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.mu.Lock()
	r.pods[p.ID] = p
	r.mu.Unlock()
	r.publishPod(EventCreated, &p.Pod)
	r.publishPod(EventStarted, &p.Pod)
	r.watchPod(p)
}

func (p *pod) netnsPath() string { return p.nsPath("net") }

// networkPod describes the pod to the network package.
func (p *pod) networkPod() network.Pod {
	m := p.Config.GetMetadata()
	np := network.Pod{ID: p.ID, Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUid(), NetNS: p.netnsPath(), Annotations: p.Config.GetAnnotations(),
		Backend: p.NetworkBackend}
	for _, pm := range p.Config.GetPortMappings() {
		np.Ports = append(np.Ports, network.PortMapping{
			Protocol:      strings.ToLower(pm.GetProtocol().String()),
			ContainerPort: pm.GetContainerPort(),
			HostPort:      pm.GetHostPort(),
			HostIP:        pm.GetHostIp(),
		})
	}
	return np
}

func (p *pod) nsPath(kind string) string {
	return "/proc/" + strconv.Itoa(p.PausePID) + "/ns/" + kind
}

// startPause starts the pod's keeper (the pause process) inside the pod's
// new namespaces and waits until it reports that hostname and sysctls are
// set.
func (r *Runtime) startPause(p *pod) error {
	exe, err := keeper.Exe()
	if err != nil {
		return err
	}
	path, err := r.pauseExe.Path(exe, filepath.Join(r.opts.State, "pause-seal"))
	if err != nil {
		r.log.Warn("pauses run from the binary's path: no sealed handle", "binary", exe, "err", err)
	}
	st, err := keeper.Start(path, pauseNamespaces(p.Config), keeperSocket(r.opts.State, p.ID))
	if errors.Is(err, keeper.ErrSetupRefused) {
		return fmt.Errorf("%w: %w", err, ErrInvalidArgument)
	} else if err != nil {
		return err
	}
	p.pauseExited = st.Exited
	p.PausePID, p.PauseStart = st.PID, st.Start
	p.PIDHolder, p.HolderStart = st.HolderPID, st.HolderStart
	p.KeeperProtocol = keeper.Protocol
	return nil
}

// pauseNamespaces is the namespace setup of a pod's pause.
func pauseNamespaces(cfg *runtimeapi.PodSandboxConfig) keeper.Namespaces {
	nso := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	ns := keeper.Namespaces{
		Net:     nso.GetNetwork() != runtimeapi.NamespaceMode_NODE,
		IPC:     nso.GetIpc() != runtimeapi.NamespaceMode_NODE,
		PID:     nso.GetPid() == runtimeapi.NamespaceMode_POD,
		Sysctls: cfg.GetLinux().GetSysctls(),
	}
	if !oci.HostNetwork(cfg) {
		// The UTS namespace follows the network one, as in kubelet's model.
		ns.Hostname = oci.Hostname(cfg)
	}
	if u := oci.PodUserns(cfg); u != nil {
		// validateUserns: none of the pod's namespaces is the host's.
		ns.UIDMap, ns.GIDMap = oci.IDMapLines(u.GetUids()), oci.IDMapLines(u.GetGids())
	}
	return ns
}

// killPause ends the pause process and waits until it is gone.
func (r *Runtime) killPause(p *pod) {
	if !keeper.Kill(p.PausePID, p.PauseStart, p.pauseExited) {
		r.log.Warn("pause did not exit after SIGKILL", "pod", p.ID, "pid", p.PausePID)
	}
}

// detachPodNetwork releases what of the pod's network a stopped pod must
// not keep (host ports, its addresses' anti-spoof elements; with CNI, all
// of it: DEL) even when the pause died on its own (the netns is gone
// then, and its /proc path may name another process's). It returns the
// rest of the teardown, nil if none, for startNetTeardown once the pod's
// processes are dead.
func (r *Runtime) detachPodNetwork(ctx context.Context, p *pod) (func(context.Context) error, error) {
	if oci.HostNetwork(p.Config) || r.opts.Network == nil {
		return nil, nil
	}
	np := p.networkPod()
	if !proc.Alive(p.PausePID, p.PauseStart) {
		np.NetNS = ""
	}
	finish, err := r.opts.Network.DetachPod(ctx, np)
	if err != nil {
		return nil, fmt.Errorf("tear down network of pod %s: %w", p.ID, err)
	}
	return finish, nil
}

// netTeardownFailpoint holds the network teardowns that run after
// StopPodSandbox returned (store/failpoint.go's "name=hold:PATH"), so that
// tests see the pod stopped with its veth and address still held.
const netTeardownFailpoint = "stop-pod-network-teardown"

// startNetTeardown finishes the pod's network teardown after the stop
// returns: deleting the veth is most of a stop's time (the kernel's device
// unregistration) and nothing waits for it but the pod's address, which
// stays taken until then.
func (r *Runtime) startNetTeardown(p *pod, finish func(context.Context) error) {
	if finish == nil {
		return
	}
	id := p.ID
	r.netTeardowns.start(id, func(ctx context.Context) error {
		if err := r.fail.Hold(ctx, netTeardownFailpoint); err != nil {
			return err
		}
		err := finish(ctx)
		if err != nil {
			r.log.Warn("finish the network teardown of a stopped pod; RemovePodSandbox retries it", "pod", id, "err", err)
		}
		return err
	})
}

// StopPod kills the pod's containers and its pause process. Stopping a pod
// that is already stopped or does not exist is not an error.
func (r *Runtime) StopPod(ctx context.Context, id string) error {
	p, err := r.lookupPod(id)
	if errors.Is(err, names.ErrUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	tStart := time.Now()
	for _, c := range r.podContainers(p.ID) {
		if err := r.StopContainer(ctx, c.ID, 0); err != nil {
			return fmt.Errorf("stop pod %s: %w", p.ID, err)
		}
	}
	r.fail.Crash("stop-pod-after-containers")
	r.notifyPodStopped(p)
	p.mu.Lock()
	defer p.mu.Unlock()
	t0 := time.Now()
	var finishNet func(context.Context) error
	if !p.netDetached {
		if finishNet, err = r.detachPodNetwork(ctx, p); err != nil {
			return err
		}
		p.netDetached = true
	}
	tNet := time.Now()
	r.fail.Crash("stop-pod-after-network")
	if p.State == PodNotReady && !proc.Alive(p.PausePID, p.PauseStart) {
		r.startNetTeardown(p, finishNet)
		hostfs.UnmountPodFiles(p.Dir)
		r.removePodCgroup(p) // left by a crash mid-stop
		return nil
	}
	r.killPause(p)
	tPause := time.Now()
	r.startNetTeardown(p, finishNet) // the netns's last process is gone
	r.fail.Crash("stop-pod-after-pause")
	hostfs.UnmountPodFiles(p.Dir)
	r.removePodCgroup(p)
	tCgroup := time.Now()
	r.fail.Crash("stop-pod-after-cgroup")
	p.State = PodNotReady
	if err := r.savePod(&p.Pod); err != nil {
		return fmt.Errorf("save pod %s: %w", p.ID, err)
	}
	r.log.Debug("stop pod phases", "pod", p.ID, "containers", t0.Sub(tStart), "network", tNet.Sub(t0), "pause", tPause.Sub(tNet),
		"shm_cgroup", tCgroup.Sub(tPause), "save", time.Since(tCgroup))
	r.fail.Crash("stop-pod-after-save")
	r.publishPod(EventStopped, &p.Pod)
	r.log.Info("pod stopped", "pod", names.PodLog(p.Config), "pod_id", p.ID)
	return nil
}

// RemovePod stops the pod if needed and removes it with all its containers.
// Removing a pod that does not exist is not an error.
func (r *Runtime) RemovePod(ctx context.Context, id string) error {
	p, err := r.lookupPod(id)
	if errors.Is(err, names.ErrUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.StopPod(ctx, p.ID); err != nil {
		return err
	}
	// The network teardown StopPod left running: a removed pod holds no
	// veth or address. One that failed is retried by the next call's stop.
	if err := r.netTeardowns.wait(ctx, p.ID); err != nil {
		p.mu.Lock()
		p.netDetached = false
		p.mu.Unlock()
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	for _, c := range r.podContainers(p.ID) {
		if err := r.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("remove pod %s: %w", p.ID, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r.removePodCgroup(p)
	hostfs.UnmountPodFiles(p.Dir) // unmounted at the stop; not if that failed midway
	if err := os.RemoveAll(p.Dir); err != nil {
		return internal(fmt.Errorf("remove pod %s files: %w", p.ID, err))
	}
	os.Remove(keeperSocket(r.opts.State, p.ID)) // a killed keeper leaves it
	// The containers' root filesystems went in the background meanwhile
	// (removals.go); a removed pod leaves no mount behind, and one that
	// could not be removed keeps the pod (and fails the call) until it is.
	if err := r.finishRemovals(ctx, p.ID); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	if err := r.store.Delete(store.Pods, p.ID); err != nil {
		return internal(fmt.Errorf("remove pod %s metadata: %w", p.ID, err))
	}
	r.mu.Lock()
	delete(r.pods, p.ID)
	r.mu.Unlock()
	r.publishPod(EventDeleted, &p.Pod)
	if pl := r.plugins(); pl.Active() {
		pp := p.Pod
		if err := pl.RemovePod(ctx, &pp); err != nil {
			r.log.Warn("NRI RemovePodSandbox", "pod", p.ID, "err", err)
		}
	}
	r.podNames.Release(names.Pod(p.Config))
	r.log.Info("pod removed", "pod", p.ID)
	return nil
}

func (r *Runtime) lookupPod(id string) (*pod, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, err := names.Resolve(r.pods, id, "pod sandbox")
	if err != nil {
		return nil, err
	}
	return r.pods[full], nil
}

// Pod returns a copy of the pod with the given ID or unique ID prefix.
func (r *Runtime) Pod(id string) (Pod, error) {
	p, err := r.lookupPod(id)
	if err != nil {
		return Pod{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh()
	return p.Pod, nil
}

// Pods returns copies of all pods.
func (r *Runtime) Pods() []Pod {
	r.mu.RLock()
	list := make([]*pod, 0, len(r.pods))
	for _, p := range r.pods {
		list = append(list, p)
	}
	r.mu.RUnlock()
	out := make([]Pod, 0, len(list))
	for _, p := range list {
		p.mu.Lock()
		p.refresh()
		out = append(out, p.Pod)
		p.mu.Unlock()
	}
	return out
}
