package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/exec"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/names"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/store"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/sandbox/runner"
)

type container struct {
	mu sync.Mutex // serialises lifecycle operations on this container
	Container

	// rootfsMu serialises the unmount of an exited container's root
	// filesystem (releaseRootfs) with RemoveContainer, without holding mu:
	// the unmount waits for containers/storage's lock, and StopContainer,
	// StopPodSandbox and the status calls, which take mu, must not wait
	// for it. Taken after mu, never before.
	rootfsMu sync.Mutex
	// rootfsRemoved: RemoveContainer handed the root filesystem to its
	// removal; releaseRootfs leaves it alone. Under rootfsMu.
	rootfsRemoved bool

	exited chan struct{} // closed once the exit is recorded; nil before start
	// inLibcontainer: it was started through libcontainer, whose state
	// (under libcontainerRoot) the rare calls that need it load then
	// (loadLibcontainer): a loaded handle keeps the container's whole
	// config, seccomp profile included, ~10 KiB of heap per container.
	inLibcontainer bool
	// ociCgroups are the cgroup directories of a running container of an
	// external OCI runtime (nil otherwise), for stats and OOM kills.
	ociCgroups map[string]string
	exec       *exec.Target // reused by every exec while the container runs; nil until the first
	// logError says why the keeper's log writes fail, while they do (nil
	// when they work); ContainerStatus shows it as the message.
	logError atomic.Pointer[string]
	// watch lives until stopWatching (Close, a shutdown) ends the exit
	// watcher: the watcher waits on it directly, without a goroutine per
	// container to turn a channel into a cancellation.
	watch     context.Context
	stopWatch context.CancelFunc
	// nriStopped: its NRI StopContainer hook ran (nri.go).
	nriStopped nriOnce

	// oom watches the cgroup for OOM kills while the container runs (cgroup
	// v1, systemd driver: the scope may be gone before the exit is read).
	oom *cgroups.OOMEvents
}

func newContainer(c *Container) *container {
	ctr := &container{Container: *c}
	ctr.watch, ctr.stopWatch = context.WithCancel(context.Background())
	if c.State == ContainerExited {
		ctr.exited = make(chan struct{})
		close(ctr.exited)
		ctr.nriStopped.once.Do(func() {}) // stopped before: no NRI StopContainer again
	}
	return ctr
}

func (c *container) stopWatching() { c.stopWatch() }

// createContainer prepares a container in a ready pod: its root filesystem
// on the image and its OCI bundle. Nothing runs until StartContainer. From
// a checkpoint archive (from non-nil), the archive's rootfs diff is
// applied onto the new writable layer and its CRIU images put in the
// bundle, where the runner finds them and restores instead of starting.
func (r *Runtime) createContainer(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig, img Image, from *checkpoint.Archive) (_ Container, retErr error) {
	tBegin := time.Now()
	if err := validateContainerRequest(cfg); err != nil {
		return Container{}, err
	}
	// Until the container is listed, a plugin connecting now is not
	// synchronized: it would miss the container otherwise.
	unblock := r.plugins().BlockSync()
	defer unblock()
	p, podCopy, err := r.readyPod(podID)
	if err != nil {
		return Container{}, err
	}
	if err := hostfs.CheckMounts(cfg.GetMounts()); err != nil {
		return Container{}, err
	}
	if err := r.checkMountFeatures(cfg, podCopy.RuntimeHandler); err != nil {
		return Container{}, err
	}
	imageVolumes, err := r.resolveImageVolumes(cfg)
	if err != nil {
		return Container{}, imageVolumeError(err)
	}
	stopSignal, err := oci.StopSignalName(cfg, img)
	if err != nil {
		return Container{}, err
	}

	id := names.NewID()
	name := names.Container(podCopy.Config, cfg)
	if err := r.ctrNames.Reserve(name, id); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	var undo []func()
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() { r.ctrNames.Release(name) })

	c := &Container{
		ID:         id,
		PodID:      podCopy.ID,
		Config:     cfg,
		Image:      ImageRef{ID: img.ID, Ref: cfg.GetImage().GetImage()},
		CreatedAt:  time.Now().UnixNano(),
		State:      ContainerCreated,
		Bundle:     filepath.Join(r.opts.State, "containers", id),
		StopSignal: stopSignal,

		ImageVolumes: imageVolumes,
	}
	if c.LogPath, err = hostfs.ContainerLogPath(podCopy.Config.GetLogDirectory(), cfg.GetLogPath()); err != nil {
		return Container{}, err
	}
	if err := hostfs.EnsureDir(c.Bundle, hostfs.PrivateDirMode); err != nil {
		return Container{}, fmt.Errorf("bundle: %w", err)
	}
	undo = append(undo, func() { hostfs.UnpinTargetPIDNS(c.Bundle); os.RemoveAll(c.Bundle) })
	r.fail.Crash("create-container-after-bundle")
	tRootfs := time.Now()
	if err := r.makeContainerRootfs(ctx, c, img, &podCopy, &undo); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	tVolumes := time.Now() // the restored files, the image volumes, the target PID namespace
	if from != nil {
		if err := restoreFiles(from, c); err != nil {
			return Container{}, fmt.Errorf("create container %s from checkpoint %s: %w", name, from.Path, err)
		}
	}
	undo = append(undo, func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		if err := r.releaseImageVolumes(cctx, c.ID); err != nil {
			r.log.Warn("release the image volumes of a container whose creation failed", "container", c.ID, "err", err)
		}
	})
	volumes, err := r.mountImageVolumes(ctx, c, podCopy.Config)
	if err != nil {
		return Container{}, imageVolumeError(fmt.Errorf("create container %s: %w", name, err))
	}
	targetPIDNS, err := r.pinTargetPIDNS(podCopy.ID, c.Bundle, cfg)
	if err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	tSpec := time.Now()
	if err := r.writeContainerSpec(ctx, c, img, &podCopy, volumes, targetPIDNS, &undo); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	tRecord := time.Now()
	if from != nil {
		if err := checkRestorePrivileges(c); err != nil {
			return Container{}, fmt.Errorf("create container %s from checkpoint %s: %w", name, from.Path, err)
		}
	}
	r.fail.Crash("create-container-after-spec")
	if err := r.fail.Hold(ctx, "create-container-after-spec"); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	ctr := newContainer(c)
	defer func() {
		// After ctr.mu is released: a slow plugin delays only the reply.
		if retErr == nil && r.plugins().Active() {
			pl, cc := r.plugins(), *c
			pl.PostCreateContainer(ctx, &podCopy, &cc)
		}
	}()
	ctr.mu.Lock() // its created event comes before any other
	defer ctr.mu.Unlock()
	if err := r.recordContainer(p, ctr); err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	r.publishContainer(EventCreated, &ctr.Container)
	tEnd := time.Now()
	r.log.Debug("create container phases", "container", id, "before_rootfs", tRootfs.Sub(tBegin),
		"rootfs", tVolumes.Sub(tRootfs), "volumes", tSpec.Sub(tVolumes), "spec", tRecord.Sub(tSpec), "record", tEnd.Sub(tRecord))
	r.log.Info("container created", "container", id, "name", name, "pod", podCopy.ID)
	return *c, nil
}

// validateContainerRequest refuses a container config that names no
// container or no image.
func validateContainerRequest(cfg *runtimeapi.ContainerConfig) error {
	if cfg == nil || cfg.GetMetadata().GetName() == "" {
		return fmt.Errorf("container config needs metadata with a name: %w", ErrInvalidArgument)
	}
	if cfg.GetImage().GetImage() == "" {
		return fmt.Errorf("container %q names no image: %w", cfg.GetMetadata().GetName(), ErrInvalidArgument)
	}
	return nil
}

// readyPod returns the pod a container is created in, and a copy of its
// record, if it is ready.
func (r *Runtime) readyPod(podID string) (*pod, Pod, error) {
	p, err := r.lookupPod(podID)
	if err != nil {
		return nil, Pod{}, fmt.Errorf("create container in pod: %w", err)
	}
	p.mu.Lock()
	p.refresh()
	podCopy := p.Pod
	p.mu.Unlock()
	if podCopy.State != PodReady {
		if podCopy.NotReadyReason != "" {
			return nil, Pod{}, fmt.Errorf("pod %s is not ready: %s; the pod must be recreated: %w", podCopy.ID, podCopy.NotReadyReason, ErrFailedPrecondition)
		}
		return nil, Pod{}, fmt.Errorf("pod %s is not ready: %w", podCopy.ID, ErrFailedPrecondition)
	}
	return p, podCopy, nil
}

// makeContainerRootfs mounts the container's root filesystem from its
// image, with the image's volumes made in it, and appends its removal to
// undo.
func (r *Runtime) makeContainerRootfs(ctx context.Context, c *Container, img Image, p *Pod, undo *[]func()) error {
	rootfs, err := r.createRootfs(ctx, c.ID, img.ID, p.Config)
	if err != nil {
		return fmt.Errorf("create root filesystem: %w", err)
	}
	c.Rootfs = rootfs
	r.mounted.Store(c.ID, true) // StartContainer need not mount it again
	*undo = append(*undo, func() {
		r.mounted.Delete(c.ID)
		cctx, cancel := cleanupContext()
		defer cancel()
		r.removeRootfs(cctx, c.ID)
	})
	r.fail.Crash("create-container-after-rootfs")
	if err := hostfs.MakeImageVolumes(rootfs, img.Volumes, c.Config.GetMounts()); err != nil {
		return err
	}
	return hostfs.ChownImageVolumes(rootfs, img.Volumes, c.Config.GetMounts(), p.Config)
}

// writeContainerSpec builds the container's OCI spec, checks that
// libcontainer accepts it, and writes it into the bundle.
func (r *Runtime) writeContainerSpec(ctx context.Context, c *Container, img Image, p *Pod, imageVolumes map[int]string, targetPIDNS string, undo *[]func()) error {
	spec, err := oci.Build(oci.Input{
		TargetPIDNS:  targetPIDNS,
		ID:           c.ID,
		Pod:          specPod(p),
		Config:       c.Config,
		Image:        img,
		Rootfs:       c.Rootfs,
		CgroupParent: p.CgroupParent,
		PidsLimit:    r.opts.PidsLimit,
		ImageVolumes: imageVolumes,
	}, oci.HostFacts())
	if err != nil {
		return err
	}
	if err := r.cdi.Inject(spec, c.Config); err != nil {
		return err
	}
	if err := r.createContainerHook(ctx, c, p, spec, undo); err != nil {
		return err
	}
	if _, err := runner.LibcontainerConfig(c.ID, spec); err != nil {
		return fmt.Errorf("%v: %w", err, ErrInvalidArgument)
	}
	c.User = spec.Process.User
	return runner.WriteSpec(c.Bundle, spec)
}

// createContainerHook lets the NRI plugins adjust the spec of a container
// not yet listed; a plugin's failure, or an adjustment peapod refuses,
// fails CreateContainer. Its undo tells them the container went.
func (r *Runtime) createContainerHook(ctx context.Context, c *Container, p *Pod, spec *specs.Spec, undo *[]func()) error {
	pl := r.plugins()
	if !pl.Active() {
		return nil
	}
	cc := *c
	err := pl.CreateContainer(ctx, p, &cc, spec)
	*undo = append(*undo, func() {
		// Also after a failure: a plugin before the failing one may have
		// allocated for the container.
		cctx, cancel := cleanupContext()
		defer cancel()
		pl.StopContainer(cctx, p, &cc)
		pl.RemoveContainer(cctx, p, &cc)
	})
	if err != nil {
		return pluginError("CreateContainer", err)
	}
	return nil
}

// targetPID is the init PID of the container whose PID namespace cfg asks
// to join (TARGET, as kubectl debug --target makes ephemeral containers),
// 0 when it asks for none. The target must be a running container of the
// same pod: a container never joins another pod's processes.
func (r *Runtime) targetPID(podID string, cfg *runtimeapi.ContainerConfig) (pid int, start uint64, err error) {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if opts.GetPid() != runtimeapi.NamespaceMode_TARGET {
		return 0, 0, nil
	}
	target, err := r.lookupContainer(opts.GetTargetId())
	if err != nil {
		return 0, 0, fmt.Errorf("target container %q of the PID namespace: %v: %w", opts.GetTargetId(), err, ErrInvalidArgument)
	}
	target.mu.Lock()
	pod, state := target.PodID, target.State
	pid, start = target.PID, target.PIDStart
	target.mu.Unlock()
	if pod != podID {
		return 0, 0, fmt.Errorf("target container %q of the PID namespace is not in pod %s: %w", opts.GetTargetId(), podID, ErrInvalidArgument)
	}
	if state != ContainerRunning || pid <= 0 || !proc.Alive(pid, start) {
		return 0, 0, fmt.Errorf("target container %q of the PID namespace is not running: %w", opts.GetTargetId(), ErrFailedPrecondition)
	}
	return pid, start, nil
}

// pinTargetPIDNS pins the PID namespace of a TARGET container's target
// into its bundle (hostfs/targetns.go) and returns the pin; "" when cfg
// asks for no target.
func (r *Runtime) pinTargetPIDNS(podID, bundle string, cfg *runtimeapi.ContainerConfig) (string, error) {
	pid, start, err := r.targetPID(podID, cfg)
	if err != nil || pid == 0 {
		return "", err
	}
	pin, err := hostfs.PinTargetPIDNS(bundle, pid, func(p int) bool { return proc.Alive(p, start) })
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("target container %q of the PID namespace: %v: %w",
			cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetTargetId(), err, ErrFailedPrecondition)
	}
	return pin, err
}

// checkTarget refuses to start a TARGET container whose target no longer
// runs: its pinned namespace has no init any more, and the start would
// fail less clearly.
func (r *Runtime) checkTarget(c *container) error {
	_, _, err := r.targetPID(c.PodID, c.Config)
	return err
}

// recordContainer saves a created container and makes it known, but only
// while its pod is still the ready pod it was created in: a create runs
// detached from its caller and may finish after the pod was stopped or
// removed, and the pod's lock is what StopPod and RemovePod hold to change
// that. The caller holds ctr.mu (taken before the pod's).
func (r *Runtime) recordContainer(p *pod, ctr *container) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.mu.RLock()
	current := r.pods[p.ID] == p
	r.mu.RUnlock()
	p.refresh()
	if !current || p.State != PodReady {
		return fmt.Errorf("pod %s was stopped or removed while the container was being created: %w", p.ID, ErrFailedPrecondition)
	}
	if err := r.saveContainer(&ctr.Container); err != nil {
		return fmt.Errorf("save container %s: %w", ctr.ID, err)
	}
	r.fail.Crash("create-container-after-save")
	r.mu.Lock()
	r.addContainerLocked(ctr)
	r.mu.Unlock()
	return nil
}

func (r *Runtime) lookupContainer(id string) (*container, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, err := names.Resolve(r.containers, id, "container")
	if err != nil {
		return nil, err
	}
	return r.containers[full], nil
}

// Container returns a copy of the container with the given ID or prefix.
func (r *Runtime) Container(id string) (Container, error) {
	c, err := r.lookupContainer(id)
	if err != nil {
		return Container{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.Container
	if e := c.logError.Load(); e != nil && out.Message == "" && out.State == ContainerRunning {
		out.Message = *e
	}
	return out, nil
}

// Containers returns copies of all containers.
func (r *Runtime) Containers() []Container {
	r.mu.RLock()
	list := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		list = append(list, c)
	}
	r.mu.RUnlock()
	out := make([]Container, 0, len(list))
	for _, c := range list {
		c.mu.Lock()
		out = append(out, c.Container)
		c.mu.Unlock()
	}
	return out
}

// ContainersIn returns copies of the containers in state: the running
// ones for the stats calls, without copying the node's exited ones.
func (r *Runtime) ContainersIn(state ContainerState) []Container {
	r.mu.RLock()
	list := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		list = append(list, c)
	}
	r.mu.RUnlock()
	var out []Container
	for _, c := range list {
		c.mu.Lock()
		if c.State == state {
			out = append(out, c.Container)
		}
		c.mu.Unlock()
	}
	return out
}

// podContainers returns copies of the pod's containers.
func (r *Runtime) podContainers(podID string) []Container {
	r.mu.RLock()
	list := make([]*container, 0, len(r.byPod[podID]))
	for _, c := range r.byPod[podID] {
		list = append(list, c)
	}
	r.mu.RUnlock()
	out := make([]Container, 0, len(list))
	for _, c := range list {
		c.mu.Lock()
		out = append(out, c.Container)
		c.mu.Unlock()
	}
	return out
}

// PodContainers returns copies of the containers of the pod with exactly
// this ID (none when there is no such pod).
func (r *Runtime) PodContainers(podID string) []Container { return r.podContainers(podID) }

// addContainerLocked adds c to the containers and their index by pod; r.mu
// is held for writing. A container's ID and pod never change.
func (r *Runtime) addContainerLocked(c *container) {
	r.containers[c.ID] = c
	m := r.byPod[c.PodID]
	if m == nil {
		m = map[string]*container{}
		r.byPod[c.PodID] = m
	}
	m[c.ID] = c
}

// dropContainerLocked removes a container from both maps; r.mu is held
// for writing.
func (r *Runtime) dropContainerLocked(id, podID string) {
	delete(r.containers, id)
	if m := r.byPod[podID]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(r.byPod, podID)
		}
	}
}

// StartContainer runs the container's process. Its stdout and stderr go to
// the container's log in the CRI format.
func (r *Runtime) StartContainer(ctx context.Context, id string) error {
	c, err := r.lookupContainer(id)
	if err != nil {
		return err
	}
	// What the NRI plugins are told after the start (PostStartContainer,
	// or StopContainer of a failed start) runs once c.mu is released.
	after, err := r.startContainer(ctx, c)
	if after != nil {
		after()
	}
	return err
}

// startContainer is StartContainer under c.mu; it returns what to tell
// the plugins afterwards.
func (r *Runtime) startContainer(ctx context.Context, c *container) (after func(), _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.State != ContainerCreated {
		return nil, fmt.Errorf("container %s is %s, only a created container can be started: %w", c.ID, c.State, ErrFailedPrecondition)
	}
	p, err := r.lookupPod(c.PodID)
	if err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	p.mu.Lock()
	p.refresh()
	ready := p.State == PodReady
	p.mu.Unlock()
	if !ready {
		return nil, fmt.Errorf("start container %s: pod %s is not ready: %w", c.ID, p.ID, ErrFailedPrecondition)
	}
	if err := r.checkTarget(c); err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	if err := r.startHookAndRun(ctx, c, p); err != nil {
		after = func() { r.notifyContainerStopped(c) }
		c.State = ContainerExited
		c.FinishedAt = time.Now().UnixNano()
		c.ExitCode = 128
		c.Reason = "StartError"
		c.Message = err.Error()
		c.exited = make(chan struct{})
		close(c.exited)
		if serr := r.saveContainer(&c.Container); serr != nil {
			r.log.Error("save container after failed start", "container", c.ID, "err", serr)
		}
		r.publishContainer(EventStopped, &c.Container)
		return after, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	if err := r.saveContainer(&c.Container); err != nil {
		return nil, fmt.Errorf("save container %s: %w", c.ID, err)
	}
	r.fail.Crash("start-container-after-save")
	if pl := r.plugins(); pl.Active() {
		pp, cc := podCopyLocked(p), c.Container
		after = func() { pl.PostStartContainer(ctx, &pp, &cc) }
	}
	r.publishContainer(EventStarted, &c.Container)
	r.log.Info("container started", "container", c.ID, "pid", c.PID)
	return after, nil
}

// startHookAndRun tells the NRI plugins that c is about to start (one may
// refuse it), then runs it. The caller holds c.mu.
func (r *Runtime) startHookAndRun(ctx context.Context, c *container, p *pod) error {
	if pl := r.plugins(); pl.Active() {
		pp, cc := podCopyLocked(p), c.Container
		if err := pl.StartContainer(ctx, &pp, &cc); err != nil {
			return pluginError("StartContainer", err)
		}
	}
	return r.runContainer(ctx, c, &p.Pod)
}

// StopContainer sends the container's stop signal (SIGTERM unless the
// config or image chose another), then SIGKILL after timeout seconds, and waits
// for the exit. Stopping a container that is not running, or unknown, is not
// an error.
func (r *Runtime) StopContainer(ctx context.Context, id string, timeout int64) error {
	c, err := r.lookupContainer(id)
	if errors.Is(err, names.ErrUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	// The lock is not held while waiting: the exit is recorded under it.
	c.mu.Lock()
	running, exited, stopSig := c.State == ContainerRunning, c.exited, stopSignalOf(&c.Container)
	c.mu.Unlock()
	if !running {
		return nil
	}
	if timeout > 0 {
		r.signal(c, stopSig)
		select {
		case <-exited:
			r.notifyContainerStopped(c)
			return nil
		case <-time.After(time.Duration(timeout) * time.Second):
		case <-ctx.Done():
		}
	}
	r.signal(c, unix.SIGKILL)
	select {
	case <-exited:
		r.notifyContainerStopped(c)
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("container %s did not exit 30s after SIGKILL: %w", c.ID, ErrDeadlineExceeded)
	}
}

// signal sends sig to the container's init process. Without a private PID
// namespace SIGKILL goes to every process of the container's cgroup, as
// nothing else would end them.
func (r *Runtime) signal(c *container, sig unix.Signal) {
	c.mu.Lock()
	inLC, pid, start := c.inLibcontainer, c.PID, c.PIDStart
	c.mu.Unlock()
	if rt := r.ociOfContainer(c); rt != nil {
		// --all for SIGKILL: every process of the container's cgroup.
		err := rt.Kill(context.Background(), c.ID, int(sig), sig == unix.SIGKILL)
		if err == nil || sig != unix.SIGKILL {
			if err != nil {
				r.log.Warn("signal container through its OCI runtime", "container", c.ID, "signal", sig, "err", err)
			}
			return
		}
	}
	if inLC {
		if lc, err := r.loadLibcontainer(c); err == nil {
			if err := lc.Signal(sig); err == nil || sig != unix.SIGKILL {
				return
			}
		}
	}
	if proc.Alive(pid, start) {
		unix.Kill(pid, sig)
	}
}

// RemoveContainer kills the container if it runs and removes it, its root
// filesystem and its bundle. The log file stays: it belongs to the kubelet.
// Removing an unknown container is not an error.
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	c, err := r.lookupContainer(id)
	if errors.Is(err, names.ErrUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.StopContainer(ctx, c.ID, 0); err != nil {
		return fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	r.notifyContainerStopped(c) // one never started, or whose exit is being told
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopWatching()
	r.destroyLibcontainer(c)
	r.mu.RLock()
	p := r.pods[c.PodID]
	r.mu.RUnlock()
	if p != nil {
		r.keeperOf(&p.Pod).Forget(ctx, c.ID) // best effort: the keeper may be gone
	}
	if len(c.ImageVolumes) > 0 {
		// After a reboot nothing marks them: mark them again, so that
		// the removal below (or the sweep after a crash) releases them.
		if err := hostfs.MarkImageVolumes(r.opts.State, c.ID); err != nil {
			return internal(fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	if err := r.store.Delete(store.Containers, c.ID); err != nil {
		return internal(fmt.Errorf("remove container %s metadata: %w", c.ID, err))
	}
	// Root filesystem and bundle go after the reply (removals.go), once an
	// unmount that the exit started is done.
	c.rootfsMu.Lock()
	c.rootfsRemoved = true
	c.rootfsMu.Unlock()
	r.mounted.Delete(c.ID)
	r.removeLater(c.PodID, c.ID, c.Bundle)
	r.mu.Lock()
	r.dropContainerLocked(c.ID, c.PodID)
	pod := r.pods[c.PodID]
	r.mu.Unlock()
	r.publishContainer(EventDeleted, &c.Container)
	if pod != nil {
		r.ctrNames.Release(names.Container(pod.Config, c.Config))
	}
	if pl := r.plugins(); pl.Active() && pod != nil {
		pp, cc := podCopyLocked(pod), c.Container
		pl.RemoveContainer(ctx, &pp, &cc)
	}
	r.log.Info("container removed", "container", c.ID)
	return nil
}

// destroyLibcontainer removes libcontainer's state and the container's
// cgroup. It is safe to call more than once.
func (r *Runtime) destroyLibcontainer(c *container) {
	c.exec = nil
	c.oom.Close()
	c.oom = nil
	if rt := r.ociOfContainer(c); rt != nil {
		// The runtime's state and the container's cgroup.
		if err := rt.Delete(context.Background(), c.ID); err != nil {
			r.log.Warn("delete container through its OCI runtime", "container", c.ID, "err", err)
		}
		c.ociCgroups = nil
		return
	}
	c.inLibcontainer = false
	lc, err := r.loadLibcontainer(c)
	if err != nil {
		return
	}
	err = lc.Destroy()
	if errors.Is(err, libcontainer.ErrRunning) {
		// Recorded as exited while its init runs: the pod's keeper, the
		// init's parent, died and could not report (killed from the
		// host, the node's OOM killer). Nothing reaps or stops it after
		// this record (StopContainer skips an exited container), and
		// without a PID namespace of its own the parent's death does not
		// end it: end it here, so that what is reported exited has exited.
		err = r.killUnreported(c, lc)
	}
	if err != nil {
		r.log.Warn("destroy container state", "container", c.ID, "err", err)
	}
}

// killUnreported SIGKILLs a container whose exit is recorded but whose
// init still runs (every process of its cgroup when it has no PID
// namespace of its own: libcontainer's Signal), waits up to 10 s for the
// init to go, and destroys the container's state and cgroup.
func (r *Runtime) killUnreported(c *container, lc *libcontainer.Container) error {
	r.log.Warn("container recorded as exited still runs: killing it", "container", c.ID)
	if err := lc.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("kill the unreported container: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := lc.Destroy()
		if !errors.Is(err, libcontainer.ErrRunning) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadLibcontainer loads libcontainer's handle of c from its state, for
// the call at hand only (see inLibcontainer).
func (r *Runtime) loadLibcontainer(c *container) (*libcontainer.Container, error) {
	return libcontainer.Load(libcontainerRoot(r.opts.State), c.ID)
}

func exitReason(code int32) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}
