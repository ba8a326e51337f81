package sandbox

import (
	"context"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/names"
	"github.com/peapod-cri/peapod/sandbox/ociruntime"
	"github.com/peapod-cri/peapod/sandbox/orphans"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"os"
	"path/filepath"
	"time"

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
	orphans.KillKeepers(r.orphanDirs(), live, r.log)
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
	hostfs.UnmountPodFiles(p.Dir)
	os.RemoveAll(p.Dir)
	r.removePodCgroup(p)
	os.Remove(keeperSocket(r.opts.State, p.ID))
	if err := r.store.Delete(store.Pods, p.ID); err != nil {
		r.log.Warn("remove the record of a half-created pod", "pod", p.ID, "err", err)
		return
	}
	delete(r.pods, p.ID)
	r.podNames.Release(names.Pod(p.Config))
}

// resetHalfStarted handles a created container that has libcontainer state:
// its StartContainer ran but was not recorded. The container is killed and
// stays created, so the kubelet's retried start starts it.
func (r *Runtime) resetHalfStarted(ctx context.Context, c *container) {
	var k *keeper.Client
	if p := r.pods[c.PodID]; p != nil && proc.Alive(p.PausePID, p.PauseStart) {
		kc := r.keeperOf(&p.Pod)
		k = &kc
	}
	if p := r.pods[c.PodID]; p != nil && r.ociOf(p.RuntimeHandler) != nil {
		r.resetHalfStartedOCI(ctx, c, r.ociOf(p.RuntimeHandler), k)
		return
	}
	if orphans.KillHalfStarted(ctx, r.orphanDirs(), c.ID, k, exitFile(c), r.log) {
		r.log.Info("killed a container whose start a crash interrupted; it stays created", "container", c.ID)
	}
}

// resetHalfStartedOCI is resetHalfStarted for a container of an external
// OCI runtime: killed and deleted through the runtime, whose state says
// whether the start got that far.
func (r *Runtime) resetHalfStartedOCI(ctx context.Context, c *container, rt *ociruntime.Runtime, k *keeper.Client) {
	if _, err := rt.State(ctx, c.ID); err != nil {
		return // never created: nothing to undo
	}
	rt.Kill(ctx, c.ID, int(unix.SIGKILL), true)
	if k != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k.Wait(wctx, c.ID, nil)
		cancel()
		k.Forget(ctx, c.ID)
	}
	if err := rt.Delete(ctx, c.ID); err != nil {
		r.log.Warn("delete a half-started container through its OCI runtime", "container", c.ID, "err", err)
	}
	os.Remove(exitFile(c))
	r.log.Info("killed a container whose start a crash interrupted; it stays created", "container", c.ID)
}

// removeOrphanBundles removes what containers whose CreateContainer a
// crash interrupted left (orphans.RemoveBundles).
func (r *Runtime) removeOrphanBundles(ctx context.Context) {
	var removeRootfs func(context.Context, string) error
	if r.opts.Images != nil {
		removeRootfs = r.removeRootfs
	}
	known := func(id string) bool { _, ok := r.containers[id]; return ok }
	orphans.RemoveBundles(ctx, r.orphanDirs(), known, removeRootfs, r.log)
}

// removeOrphanPodFiles removes pod dirs and keeper sockets of pods that
// have no record, and sockets of keepers that are gone.
func (r *Runtime) removeOrphanPodFiles() {
	live := map[string]bool{}
	for _, p := range r.pods {
		if proc.Alive(p.PausePID, p.PauseStart) {
			live[filepath.Base(keeperSocket(r.opts.State, p.ID))] = true
		}
	}
	known := func(id string) bool { _, ok := r.pods[id]; return ok }
	orphans.RemovePodFiles(r.orphanDirs(), known, live)
}

// checkSpecs moves aside the unreadable OCI specs of created and running
// containers (orphans.MoveAsideBadSpecs).
func (r *Runtime) checkSpecs() {
	bundles := map[string]string{}
	for id, c := range r.containers {
		if c.State == ContainerCreated || c.State == ContainerRunning {
			bundles[id] = c.Bundle
		}
	}
	orphans.MoveAsideBadSpecs(bundles, r.log)
}

func (r *Runtime) orphanDirs() orphans.Dirs {
	return orphans.Dirs{
		Keepers:      filepath.Join(r.opts.State, "k"),
		Pods:         filepath.Join(r.opts.State, "pods"),
		Bundles:      filepath.Join(r.opts.State, "containers"),
		Libcontainer: libcontainerRoot(r.opts.State),
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
		hostfs.UnmountPodFiles(p.Dir)
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
		r.dropContainerLocked(id, c.PodID)
	}
}
