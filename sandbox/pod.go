package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/network"
	"github.com/peapod-cri/peapod/sandbox/pause"
)

type pod struct {
	mu sync.Mutex // serialises lifecycle operations on this pod
	Pod
	pauseExited     chan struct{} // closed when the pause we started has been reaped
	holderEventSent bool          // the holder's exit was published (holder.go)
}

// runPod creates the pod's namespaces with a pause process and records the
// pod. Each step registers its undo right after it succeeds.
func (r *Runtime) runPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ Pod, retErr error) {
	if err := oci.ValidatePod(cfg); err != nil {
		return Pod{}, err
	}
	if err := r.checkUsernsSupport(cfg); err != nil {
		return Pod{}, err
	}
	if handler != "" && handler != "runc" {
		return Pod{}, fmt.Errorf("runtime handler %q: peapod has only the default handler: %w", handler, ErrNotFound)
	}
	id := newID()
	name := podName(cfg)
	if err := r.podNames.reserve(name, id); err != nil {
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
	undo = append(undo, func() { r.podNames.release(name) })

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
		return Pod{}, fmt.Errorf("cgroup parent %q is a systemd slice but peapod's cgroup driver is %s; run kubelet with --cgroup-driver=%[2]s: %w",
			p.CgroupParent, r.opts.CgroupDriver, ErrInvalidArgument)
	}
	// Recorded before anything is made, so that a crash mid-way leaves a
	// record for recovery to clean up after (reconcile.go).
	var err error
	if p.Cgroup, err = cgroups.PodPath(p.CgroupParent, id); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %v: %w", name, err, ErrInvalidArgument)
	}
	p.Creating = true
	if err := r.savePod(&p.Pod); err != nil {
		return Pod{}, fmt.Errorf("save pod %s: %w", id, err)
	}
	undo = append(undo, func() { r.store.Delete(store.Pods, id) })
	r.fail.Crash("run-pod-after-record")
	if err := hostfs.EnsureDir(p.Dir, hostfs.PrivateDirMode); err != nil {
		return Pod{}, fmt.Errorf("pod dir: %w", err)
	}
	undo = append(undo, func() {
		hostfs.UnmountPodShm(p.Dir)
		os.RemoveAll(p.Dir)
	})
	if err := hostfs.WritePodFiles(p.Dir, cfg); err != nil {
		return Pod{}, err
	}
	if u := oci.PodUserns(cfg); u != nil {
		if err := hostfs.ChownPodFiles(p.Dir, u); err != nil {
			return Pod{}, err
		}
	}
	r.fail.Crash("run-pod-after-files")
	// The pod's cgroup is made while the pause starts: the pause starts in
	// the daemon's cgroup and moves in below (AddPause).
	cgroupMade := make(chan error, 1)
	go func() { cgroupMade <- cgroups.CreatePod(p.Cgroup, oci.PodLimits(cfg.GetLinux())) }()
	pauseErr := r.startPause(p)
	if err := <-cgroupMade; err != nil {
		if pauseErr == nil {
			r.killPause(p)
		}
		return Pod{}, fmt.Errorf("run pod %s: %w", id, err)
	}
	undo = append(undo, func() { r.removePodCgroup(p) })
	r.fail.Crash("run-pod-after-cgroup")
	if pauseErr != nil {
		return Pod{}, pauseErr
	}
	undo = append(undo, func() { r.killPause(p) }) // before the cgroup goes: it holds the pause
	if err := cgroups.AddPause(p.Cgroup, p.PausePID, p.PIDHolder); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", id, err)
	}
	r.fail.Crash("run-pod-after-pause")

	if !oci.HostNetwork(cfg) && r.opts.Network != nil {
		res, err := r.opts.Network.SetupPod(ctx, p.networkPod())
		if err != nil {
			return Pod{}, fmt.Errorf("set up network of pod %s: %w", id, err)
		}
		for _, ip := range res.IPs {
			p.IPs = append(p.IPs, ip.String())
		}
		p.NetworkBackend = res.Backend
		undo = append(undo, func() {
			cctx, cancel := cleanupContext()
			defer cancel()
			r.opts.Network.TeardownPod(cctx, p.networkPod())
		})
	}
	r.fail.Crash("run-pod-after-network")
	p.State = PodReady
	p.Creating = false
	if err := r.savePod(&p.Pod); err != nil {
		return Pod{}, fmt.Errorf("save pod %s: %w", id, err)
	}
	r.fail.Crash("run-pod-after-save")
	p.mu.Lock()
	r.mu.Lock()
	r.pods[id] = p
	r.mu.Unlock()
	r.publishPod(EventCreated, &p.Pod)
	r.publishPod(EventStarted, &p.Pod)
	r.watchHolder(p)
	p.mu.Unlock()
	r.log.Info("pod ready", "pod", podLogName(cfg), "pod_id", id, "pause_pid", p.PausePID, "holder_pid", p.PIDHolder)
	return p.Pod, nil
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

// pauseReadyTimeout bounds how long a new pause may take to report that
// the pod's namespaces are set up (milliseconds normally).
const pauseReadyTimeout = 30 * time.Second

// startPause starts the built-in pause process inside new namespaces and
// waits until it reports that hostname and sysctls are set.
func (r *Runtime) startPause(p *pod) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find peapod binary: %w", err)
	}
	ns := p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	var flags uintptr
	args := []string{"peapod", pause.Command}
	if ns.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		flags |= unix.CLONE_NEWNET
	}
	if ns.GetIpc() != runtimeapi.NamespaceMode_NODE {
		flags |= unix.CLONE_NEWIPC
	}
	if !oci.HostNetwork(p.Config) {
		// The UTS namespace follows the network one, as in kubelet's model.
		flags |= unix.CLONE_NEWUTS
		args = append(args, "-h", oci.Hostname(p.Config))
	}
	if ns.GetPid() == runtimeapi.NamespaceMode_POD {
		// The keeper stays in the host PID namespace (it must reap the
		// runners it forks); it forks PID 1 of the pod's namespace.
		args = append(args, "-P")
	}
	for k, v := range p.Config.GetLinux().GetSysctls() {
		args = append(args, "-s", k+"="+v)
	}
	if u := oci.PodUserns(p.Config); u != nil {
		// The keeper creates the namespaces itself, below the pod's user
		// namespace (validateUserns: none of them is the host's).
		flags = 0
		args = append(args, "-U", oci.IDMapLines(u.GetUids()), "-G", oci.IDMapLines(u.GetGids()))
	}
	args = append(args, "-S", keeperSocket(r.opts.State, p.ID))
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pause ready pipe: %w", err)
	}
	defer readyR.Close()
	cmd := &exec.Cmd{
		Path:       r.pausePath(exe),
		Args:       args,
		Dir:        "/",
		ExtraFiles: []*os.File{readyW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setpgid:    true, // keep terminal signals meant for the daemon away from pods
		},
	}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("start pause: %w", err)
	}
	readyW.Close()
	p.pauseExited = make(chan struct{})
	exited := p.pauseExited
	go func() {
		cmd.Wait()
		close(exited)
	}()
	// The report ends when the keeper closes fd 3 (or dies). A pause that
	// never reports (wedged in a sysctl write, a namespace setup) is killed
	// at the deadline, so that RunPodSandbox fails and releases the name
	// instead of hanging with it.
	readyR.SetReadDeadline(time.Now().Add(pauseReadyTimeout))
	msg, rerr := io.ReadAll(io.LimitReader(readyR, 512))
	got := strings.TrimSpace(string(msg))
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("pause process did not report within %v (reported %q)", pauseReadyTimeout, got)
	}
	holder, ok := strings.CutPrefix(got, "ok ")
	if ok {
		p.PIDHolder, err = strconv.Atoi(holder)
		ok = err == nil
	}
	if !ok {
		cmd.Process.Kill()
		<-exited
		if got == "" {
			got = "exited without reporting"
		}
		return fmt.Errorf("pause process: %s: %w", got, ErrInvalidArgument)
	}
	p.PausePID = cmd.Process.Pid
	start, err := proc.StartTime(p.PausePID)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("read pause start time: %w", err)
	}
	p.PauseStart = start
	p.KeeperProtocol = keeper.Protocol
	if p.PIDHolder > 0 {
		// The holder is the keeper's child, confined and waiting: its PID
		// is not reused while the keeper lives.
		if p.HolderStart, err = proc.StartTime(p.PIDHolder); err != nil {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("read the namespace holder's start time: %w", err)
		}
	}
	return nil
}

// killPause ends the pause process and waits until it is gone.
func (r *Runtime) killPause(p *pod) {
	if !proc.Alive(p.PausePID, p.PauseStart) {
		return
	}
	unix.Kill(p.PausePID, unix.SIGKILL)
	if p.pauseExited != nil {
		select {
		case <-p.pauseExited:
		case <-time.After(10 * time.Second):
			r.log.Warn("pause did not exit after SIGKILL", "pod", p.ID, "pid", p.PausePID)
		}
		return
	}
	// Not our child (the daemon restarted): wait until it disappears.
	deadline := time.Now().Add(10 * time.Second)
	for proc.Alive(p.PausePID, p.PauseStart) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// StopPod kills the pod's containers and its pause process. Stopping a pod
// that is already stopped or does not exist is not an error.
func (r *Runtime) StopPod(ctx context.Context, id string) error {
	p, err := r.lookupPod(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range r.podContainers(p.ID) {
		if err := r.StopContainer(ctx, c.ID, 0); err != nil {
			return fmt.Errorf("stop pod %s: %w", p.ID, err)
		}
	}
	r.fail.Crash("stop-pod-after-containers")
	p.mu.Lock()
	defer p.mu.Unlock()
	// The network is released even when the pause died on its own (the
	// netns is gone then, and its /proc path may name another process's).
	if !oci.HostNetwork(p.Config) && r.opts.Network != nil {
		np := p.networkPod()
		if !proc.Alive(p.PausePID, p.PauseStart) {
			np.NetNS = ""
		}
		if err := r.opts.Network.TeardownPod(ctx, np); err != nil {
			return fmt.Errorf("tear down network of pod %s: %w", p.ID, err)
		}
	}
	r.fail.Crash("stop-pod-after-network")
	if p.State == PodNotReady && !proc.Alive(p.PausePID, p.PauseStart) {
		hostfs.UnmountPodShm(p.Dir)
		r.removePodCgroup(p) // left by a crash mid-stop
		return nil
	}
	r.killPause(p)
	r.fail.Crash("stop-pod-after-pause")
	hostfs.UnmountPodShm(p.Dir)
	r.removePodCgroup(p)
	r.fail.Crash("stop-pod-after-cgroup")
	p.State = PodNotReady
	if err := r.savePod(&p.Pod); err != nil {
		return fmt.Errorf("save pod %s: %w", p.ID, err)
	}
	r.fail.Crash("stop-pod-after-save")
	r.publishPod(EventStopped, &p.Pod)
	r.log.Info("pod stopped", "pod", podLogName(p.Config), "pod_id", p.ID)
	return nil
}

// RemovePod stops the pod if needed and removes it with all its containers.
// Removing a pod that does not exist is not an error.
func (r *Runtime) RemovePod(ctx context.Context, id string) error {
	p, err := r.lookupPod(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.StopPod(ctx, p.ID); err != nil {
		return err
	}
	for _, c := range r.podContainers(p.ID) {
		if err := r.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("remove pod %s: %w", p.ID, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r.removePodCgroup(p)
	if err := os.RemoveAll(p.Dir); err != nil {
		return fmt.Errorf("remove pod %s files: %w", p.ID, err)
	}
	os.Remove(keeperSocket(r.opts.State, p.ID)) // a killed keeper leaves it
	// The containers' root filesystems went in the background meanwhile
	// (removals.go); a removed pod leaves no mount behind, and one that
	// could not be removed keeps the pod (and fails the call) until it is.
	if err := r.finishRemovals(ctx, p.ID); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.ID, err)
	}
	if err := r.store.Delete(store.Pods, p.ID); err != nil {
		return fmt.Errorf("remove pod %s metadata: %w", p.ID, err)
	}
	r.mu.Lock()
	delete(r.pods, p.ID)
	r.mu.Unlock()
	r.publishPod(EventDeleted, &p.Pod)
	r.podNames.release(podName(p.Config))
	r.log.Info("pod removed", "pod", p.ID)
	return nil
}

func (r *Runtime) lookupPod(id string) (*pod, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, err := resolveID(r.pods, id, "pod sandbox")
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

// refresh notices a pause process or namespace holder that died on its own.
func (p *pod) refresh() {
	if p.State != PodReady {
		return
	}
	if !proc.Alive(p.PausePID, p.PauseStart) {
		p.State, p.NotReadyReason = PodNotReady, "the pod's pause process exited"
	} else if p.PIDHolder > 0 && !proc.Alive(p.PIDHolder, p.HolderStart) {
		p.State, p.NotReadyReason = PodNotReady, p.holderGoneReason()
	}
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
