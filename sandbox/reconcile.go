package sandbox

import (
	"context"
	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// reconcileHalfDone runs at startup, after recover, and finishes or cleans
// what a crash (or a reboot) left half done, so that nothing leaks and the
// kubelet's retries succeed:
//   - a pod whose RunPodSandbox did not finish is removed with everything
//     it got (keeper, /dev/shm mount, cgroup, network, files, record);
//   - a container whose StartContainer did not finish is killed and is
//     created again, so that the retried start works;
//   - bundles, pod dirs, keeper sockets and keepers that no record names
//     are removed, with the cgroup of the keeper's pod, and containers
//     whose pod has no record (moved aside as unreadable) are dropped;
//   - a pod that is not ready and has no running container gives back its
//     /dev/shm mount and cgroup (a crash mid-stop, or a reboot).
//
// (recover has already had the keepers of live pods bind a socket that was
// gone or replaced again: keepersock.go.)
func (r *Runtime) reconcileHalfDone() {
	ctx, cancel := cleanupContext()
	defer cancel()
	r.killOrphanKeepers()
	r.dropContainersOfLostPods()
	for _, p := range r.pods {
		if p.Creating {
			r.removeHalfCreatedPod(ctx, p)
		}
	}
	for _, c := range r.containers {
		if c.State == ContainerCreated {
			r.resetHalfStarted(ctx, c)
		}
	}
	r.removeOrphanBundles(ctx)
	r.removeOrphanPodFiles()
	r.releaseStoppedPods()
}

// killOrphanKeepers kills the keepers (and their PID holders) of this
// state dir that belong to no ready pod: those of a RunPodSandbox that
// crashed before it recorded the pause.
func (r *Runtime) killOrphanKeepers() {
	live := map[string]bool{}
	for _, p := range r.pods {
		if !p.Creating && proc.Alive(p.PausePID, p.PauseStart) {
			live[keeperSocket(r.opts.State, p.ID)] = true
		}
	}
	for _, k := range keeper.Running(filepath.Join(r.opts.State, "k")) {
		if live[k.Socket] {
			continue
		}
		r.log.Info("kill the keeper of a pod that has no record (never finished, or moved aside)", "pid", k.PID, "socket", k.Socket)
		cgroupDirs := cgroups.PodDirsOf(k.PID)
		unix.Kill(k.PID, unix.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for proc.Alive(k.PID, k.Start) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		// A pod that lost its record has nothing else that leads to its
		// cgroup (orphans.go).
		if err := cgroups.RemoveTrees(cgroupDirs); err != nil {
			r.log.Warn("remove the cgroup of a pod that has no record", "socket", k.Socket, "err", err)
		}
	}
}

// removeHalfCreatedPod undoes a RunPodSandbox that a crash interrupted.
// Its keeper is already gone (killOrphanKeepers), and with it the network
// namespace and veth; the network's reconcile releases the IP.
func (r *Runtime) removeHalfCreatedPod(ctx context.Context, p *pod) {
	r.log.Info("remove a pod whose creation a crash interrupted", "pod", p.ID)
	if !oci.HostNetwork(p.Config) && r.opts.Network != nil {
		np := p.networkPod()
		np.NetNS = ""
		if err := r.opts.Network.TeardownPod(ctx, np); err != nil {
			r.log.Warn("release the network of a half-created pod", "pod", p.ID, "err", err)
		}
	}
	hostfs.UnmountPodShm(p.Dir)
	os.RemoveAll(p.Dir)
	r.removePodCgroup(p)
	os.Remove(keeperSocket(r.opts.State, p.ID))
	if err := r.store.Delete(store.Pods, p.ID); err != nil {
		r.log.Warn("remove the record of a half-created pod", "pod", p.ID, "err", err)
		return
	}
	delete(r.pods, p.ID)
	r.podNames.release(podName(p.Config))
}

// resetHalfStarted handles a created container that has libcontainer state:
// its StartContainer ran but was not recorded. The container is killed and
// stays created, so the kubelet's retried start starts it.
func (r *Runtime) resetHalfStarted(ctx context.Context, c *container) {
	lc, err := libcontainer.Load(libcontainerRoot(r.opts.State), c.ID)
	if err != nil {
		return // never started: nothing to undo
	}
	r.log.Info("kill a container whose start a crash interrupted; it stays created", "container", c.ID)
	lc.Signal(unix.SIGKILL)
	p := r.pods[c.PodID]
	if p != nil && proc.Alive(p.PausePID, p.PauseStart) {
		k := r.keeperOf(&p.Pod)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k.Wait(wctx, c.ID, nil)
		cancel()
		k.Forget(ctx, c.ID)
	}
	if err := lc.Destroy(); err != nil {
		r.log.Warn("destroy the state of a half-started container", "container", c.ID, "err", err)
	}
	os.Remove(exitFile(c))
}

// removeOrphanBundles removes the bundle, root filesystem and libcontainer
// state of containers whose CreateContainer a crash interrupted (the
// bundle is made first, the record last).
func (r *Runtime) removeOrphanBundles(ctx context.Context) {
	entries, _ := os.ReadDir(filepath.Join(r.opts.State, "containers"))
	for _, e := range entries {
		id := e.Name()
		if _, ok := r.containers[id]; ok {
			continue
		}
		r.log.Info("remove a container whose creation a crash interrupted", "container", id)
		if lc, err := libcontainer.Load(libcontainerRoot(r.opts.State), id); err == nil {
			lc.Signal(unix.SIGKILL)
			lc.Destroy()
		}
		if r.opts.Images != nil {
			if err := r.removeRootfs(ctx, id); err != nil {
				r.log.Warn("remove the root filesystem of a half-created container", "container", id, "err", err)
				continue
			}
		}
		os.RemoveAll(filepath.Join(r.opts.State, "containers", id))
	}
}

// removeOrphanPodFiles removes pod dirs and keeper sockets of pods that
// have no record, and sockets of keepers that are gone.
func (r *Runtime) removeOrphanPodFiles() {
	dir := filepath.Join(r.opts.State, "pods")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := r.pods[e.Name()]; !ok {
			hostfs.UnmountPodShm(filepath.Join(dir, e.Name()))
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	live := map[string]bool{}
	for _, p := range r.pods {
		if proc.Alive(p.PausePID, p.PauseStart) {
			live[filepath.Base(keeperSocket(r.opts.State, p.ID))] = true
		}
	}
	kdir := filepath.Join(r.opts.State, "k")
	entries, _ = os.ReadDir(kdir)
	for _, e := range entries {
		if !live[e.Name()] {
			os.Remove(filepath.Join(kdir, e.Name()))
		}
	}
}

// releaseStoppedPods gives back the /dev/shm mount and cgroup of pods that
// are not ready and have no running container: a crash mid-StopPodSandbox
// or a reboot leaves them.
func (r *Runtime) releaseStoppedPods() {
	running := map[string]bool{}
	for _, c := range r.containers {
		if c.State == ContainerRunning {
			running[c.PodID] = true
		}
	}
	for _, p := range r.pods {
		if p.State == PodReady || running[p.ID] || proc.Alive(p.PausePID, p.PauseStart) {
			continue
		}
		hostfs.UnmountPodShm(p.Dir)
		r.removePodCgroup(p)
	}
}

// dropContainersOfLostPods forgets the containers whose pod has no record
// (moved aside, or lost): their records are deleted, and removeOrphanBundles
// then removes their bundles, libcontainer state and root filesystems.
func (r *Runtime) dropContainersOfLostPods() {
	for id, c := range r.containers {
		if _, ok := r.pods[c.PodID]; ok {
			continue
		}
		r.log.Warn("container of a pod that has no record: removed", "container", id, "pod", c.PodID)
		if err := r.store.Delete(store.Containers, id); err != nil {
			r.log.Warn("delete the record of a container of a lost pod", "container", id, "err", err)
			continue
		}
		c.stopWatching()
		delete(r.containers, id)
	}
}
