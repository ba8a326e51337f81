package sandbox

import (
	"bytes"
	"context"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/pause"
)

// reconcileHalfDone runs at startup, after recover, and finishes or cleans
// what a crash (or a reboot) left half done, so that nothing leaks and the
// kubelet's retries succeed:
//   - a pod whose RunPodSandbox did not finish is removed with everything
//     it got (keeper, /dev/shm mount, cgroup, network, files, record);
//   - a container whose StartContainer did not finish is killed and is
//     created again, so that the retried start works;
//   - bundles, pod dirs, keeper sockets and keepers that no record names
//     are removed;
//   - a pod that is not ready and has no running container gives back its
//     /dev/shm mount and cgroup (a crash mid-stop, or a reboot).
func (r *Runtime) reconcileHalfDone() {
	ctx, cancel := cleanupContext()
	defer cancel()
	r.killOrphanKeepers()
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
	for _, k := range keeperProcesses(filepath.Join(r.opts.State, "k")) {
		if live[k.socket] {
			continue
		}
		r.log.Info("kill the keeper of a pod that was never finished", "pid", k.pid, "socket", k.socket)
		unix.Kill(k.pid, unix.SIGKILL)
		deadline := time.Now().Add(10 * time.Second)
		for proc.Alive(k.pid, k.start) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

type keeperProcess struct {
	pid    int
	start  uint64
	socket string
}

// keeperProcesses finds "peapod pod-pause ... -S SOCKET" processes whose
// socket is in dir: keepers (their holders read "/pause" and die with them;
// those of an older peapod match too).
func keeperProcesses(dir string) []keeperProcess {
	entries, _ := os.ReadDir("/proc")
	var out []keeperProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
		if len(args) < 2 || string(args[1]) != pause.Command {
			continue
		}
		for i := 2; i+1 < len(args); i++ {
			if string(args[i]) == "-S" && filepath.Dir(string(args[i+1])) == dir {
				start, err := proc.StartTime(pid)
				if err == nil {
					out = append(out, keeperProcess{pid: pid, start: start, socket: string(args[i+1])})
				}
				break
			}
		}
	}
	return out
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
	unmountPodShm(p.Dir)
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
			unmountPodShm(filepath.Join(dir, e.Name()))
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
		unmountPodShm(p.Dir)
		r.removePodCgroup(p)
	}
}
