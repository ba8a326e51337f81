// Package sandbox runs pods and their containers: the pause process that
// owns a pod's namespaces, containers run with runc's libcontainer inside
// the peapod binary, their logs and exit codes, and the metadata that lets a
// restarted daemon report them again.
package sandbox

import (
	"context"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/exec"
	"github.com/peapod-cri/peapod/sandbox/helperbin"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/names"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/removals"
	"github.com/peapod-cri/peapod/sandbox/seal"
	"github.com/peapod-cri/peapod/sandbox/stats"
	"github.com/peapod-cri/peapod/sandbox/store"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/network"
)

// Images is what the sandbox needs from the image store: a copy-on-write
// root filesystem per container, and the images it mounts as volumes.
type Images interface {
	CreateRootfs(ctx context.Context, containerID, imageID string) (string, error)
	// CreateRootfsMapped is CreateRootfs for a container in a user
	// namespace with these mappings.
	CreateRootfsMapped(ctx context.Context, containerID, imageID string, uids, gids []specs.LinuxIDMapping) (string, error)
	RemoveRootfs(ctx context.Context, containerID string) error
	// UnmountRootfs unmounts an exited container's root filesystem and
	// keeps its files for RemoveRootfs.
	UnmountRootfs(ctx context.Context, containerID string) error
	// ImageID returns the ID of the stored image ref names.
	ImageID(ref string) (string, error)
	// MountImageVolume mounts image imageID (mapped, with mappings) as
	// mount n of container owner and returns its path; again, the same.
	MountImageVolume(ctx context.Context, owner string, n int, imageID string, uids, gids []specs.LinuxIDMapping) (string, error)
	// RemoveImageVolumes unmounts and deletes container owner's image volumes.
	RemoveImageVolumes(ctx context.Context, owner string) error
}

// Network prepares a pod's network namespace (package network).
type Network interface {
	SetupPod(ctx context.Context, pod network.Pod) (network.Result, error)
	TeardownPod(ctx context.Context, pod network.Pod) error
	// DetachPod: StopPodSandbox's teardown, the rest after it returns
	// (network.Backend).
	DetachPod(ctx context.Context, pod network.Pod) (finish func(context.Context) error, err error)
}

// Options configure a Runtime.
type Options struct {
	Root         string   // persistent: metadata database
	State        string   // runtime state: pod dirs, container bundles, libcontainer state
	CgroupParent string   // used when a pod names no cgroup parent
	CgroupDriver string   // "cgroupfs" (kubelet's driver must match)
	PidsLimit    int64    // each container's pids.max unless its resources set one; 0: none
	CDISpecDirs  []string // CDI device specs (config cdi_spec_dirs); empty: CDI devices refused
	Images       Images
	Network      Network
	Events       Events  // receives pod and container events; nil: none
	Plugins      Plugins // NRI plugins told of each lifecycle step (package nri); nil: none
	Logger       *slog.Logger

	// Handlers are the runtime handlers served besides the default ("" or
	// "runc"), each with its runtime (config runtime_handlers).
	Handlers []Handler
}

// Runtime owns every pod and container of the node.
type Runtime struct {
	opts  Options
	log   *slog.Logger
	store *store.Metadata

	mu         sync.RWMutex
	pods       map[string]*pod
	containers map[string]*container
	// byPod indexes containers by pod, so that what concerns one pod
	// (its stats, stop, removal) does not walk every container of the
	// node: 20,000 exited ones on a node whose GC lags (kubernetes#134750).
	byPod    map[string]map[string]*container
	podNames *names.Registry
	ctrNames *names.Registry

	samples      stats.CPURates            // for the CPU rate in stats
	cdi          *oci.CDIRegistry          // resolves ContainerConfig.CDI_devices
	statsCache   stats.Cache               // cgroup dirs and layer usage between stats calls
	podOps       *store.Results[Pod]       // RunPod calls that may outlive their caller
	ctrOps       *store.Results[Container] // CreateContainer calls, likewise
	fail         store.Failpoints          // crash points for recovery tests (store/failpoint.go); nil in production
	removals     *removals.Queue           // root filesystems of removed containers being deleted
	netTeardowns *netTeardowns             // stopped pods' veths being deleted (netteardown.go)
	mounted      sync.Map                  // container IDs whose root filesystem this process mounted

	usernsWarn sync.Once           // logs once why Status does not offer user namespaces
	handlers   map[string]*handler // by name: the configured handlers and their runtimes
	exec       *exec.Executor      // exec, attach and port-forward (package sandbox/exec)
	pauseExe   keeper.Binary       // the sealed binary pauses run from
}

// Open loads the persisted pods and containers and reconciles them with the
// processes that are still alive.
func Open(opts Options) (*Runtime, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	hostfs.MoveAsideNonDirs(stateDirs(opts.Root, opts.State), opts.Logger)
	if err := makeStateDirs(opts.Root, opts.State); err != nil {
		return nil, err
	}
	// The embedded runner runs from a sealed memfd, which libcontainer
	// executes as the container init as it is: nothing to copy.
	if exe := seal.SelfExe(); exe != "" && helperbin.File(helperbin.Runner) == nil && seal.Overlaps(exe, libcontainerRoot(opts.State)) {
		opts.Logger.Warn("the state directory is inside the peapod binary's directory: "+
			"every exec and container start will copy the whole binary (tens of ms each); "+
			"install the binary in a directory of its own", "binary", exe, "state", opts.State)
	}
	md, err := store.OpenOrAside(filepath.Join(opts.Root, "metadata.db"), opts.Logger)
	if err != nil {
		return nil, err
	}
	r := &Runtime{
		opts:         opts,
		log:          opts.Logger,
		store:        md,
		pods:         map[string]*pod{},
		containers:   map[string]*container{},
		byPod:        map[string]map[string]*container{},
		podNames:     names.NewRegistry(),
		ctrNames:     names.NewRegistry(),
		podOps:       store.NewResults[Pod](ErrAlreadyExists),
		ctrOps:       store.NewResults[Container](ErrAlreadyExists),
		fail:         store.FailpointsFromEnv(),
		removals:     removals.New(),
		netTeardowns: newNetTeardowns(),
		cdi:          oci.NewCDIRegistry(opts.CDISpecDirs),
		exec:         exec.New(libcontainerRoot(opts.State), filepath.Join(opts.State, "exec-seal"), opts.Logger),
	}
	r.openHandlers()
	if _, held := r.fail[layerWalkFailpoint]; held {
		r.statsCache.BeforeWalk = func(ctx context.Context) error { return r.fail.Hold(ctx, layerWalkFailpoint) }
	}
	if err := r.recover(); err != nil {
		md.Close()
		return nil, err
	}
	r.reconcileHalfDone()
	r.checkSpecs()
	r.reconcileNetwork()
	return r, nil
}

// reconcileNetwork lets the network release what pods that are gone still
// hold (IPs, veths, host ports), e.g. after a crash mid-RunPodSandbox.
func (r *Runtime) reconcileNetwork() {
	rn, ok := r.opts.Network.(interface {
		Reconcile(ctx context.Context, live []string) error
	})
	if !ok {
		return
	}
	var live []string
	for id, p := range r.pods {
		if p.State == PodReady {
			live = append(live, id)
		}
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	if err := rn.Reconcile(ctx, live); err != nil {
		r.log.Warn("release the network of pods that are gone", "err", err)
	}
}

// Close stops the watchers of recovered containers and closes the metadata
// store. Pods and containers keep running; the goroutines that copy their
// output end with the daemon (docs/design.md).
func (r *Runtime) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeDetachedTimeout)
	if !r.podOps.Shutdown(ctx) || !r.ctrOps.Shutdown(ctx) {
		r.log.Warn("detached RunPodSandbox or CreateContainer calls still running at shutdown; the next start cleans up after them", "waited", closeDetachedTimeout)
	}
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), closeRemovalsTimeout)
	r.removals.Wait(ctx, "")
	if !r.netTeardowns.waitAll(ctx) {
		r.log.Warn("network teardowns of stopped pods still running at shutdown; the next start finishes them")
	}
	cancel()
	r.mu.Lock()
	for _, c := range r.containers {
		c.stopWatching()
	}
	r.mu.Unlock()
	return r.store.Close()
}

// recover rebuilds the in-memory state from the metadata store. A pod whose
// pause is gone is NotReady; a container whose process is gone is Exited.
// A record that cannot be decoded, or names itself wrongly, is moved aside
// by the store: it never keeps the daemon from starting.
func (r *Runtime) recover() error {
	pods, err := r.store.LoadPods(r.log)
	if err != nil {
		return err
	}
	for _, p := range pods {
		if p.State == PodReady && !proc.Alive(p.PausePID, p.PauseStart) {
			p.State = PodNotReady
			r.log.Info("pod's pause process is gone; pod is not ready", "pod", p.ID)
		}
		recoverHolderStart(p)
		pp := &pod{Pod: *p}
		pp.mu.Lock() // a watch's callback may run already
		r.watchPod(pp)
		pp.refresh()
		if pp.State != PodReady {
			pp.nriStopped.once.Do(func() {}) // stopped before: no NRI StopPodSandbox again
		}
		pp.mu.Unlock()
		r.pods[p.ID] = pp
		if err := r.podNames.Reserve(names.Pod(p.Config), p.ID); err != nil {
			r.log.Warn("two pod records have the same name; both are kept", "pod", p.ID, "err", err)
		}
	}
	// Running containers are recovered after the read transaction (the
	// load returns after it): recording an exit writes to the store, which
	// deadlocks inside a read transaction when the file must grow.
	ctrs, err := r.store.LoadContainers(r.log)
	if err != nil {
		return err
	}
	for _, c := range ctrs {
		ctr := newContainer(c)
		r.addContainerLocked(ctr)
		if p, ok := r.pods[c.PodID]; ok {
			if err := r.ctrNames.Reserve(names.Container(p.Config, c.Config), c.ID); err != nil {
				r.log.Warn("two container records have the same name; both are kept", "container", c.ID, "err", err)
			}
		}
	}
	// Before the containers reconnect to their keepers.
	r.restoreKeeperSockets()
	var exited []*container
	for _, c := range r.containers {
		if c.State == ContainerRunning {
			r.recoverContainer(c)
		}
		if c.State == ContainerExited {
			exited = append(exited, c)
		}
	}
	// Exited while this daemon was down (or by an older peapod, which
	// kept them mounted): in the background, a node may hold thousands.
	go r.releaseExitedRootfs(exited)
	return nil
}

func libcontainerRoot(state string) string { return filepath.Join(state, "runc") }

// keeperOf is the client of a pod's keeper. The socket path is kept short
// (unix socket paths are limited to 108 bytes): half the pod ID is unique
// enough among the pods of one node.
func (r *Runtime) keeperOf(p *Pod) keeper.Client {
	return keeper.Client{Socket: keeperSocket(r.opts.State, p.ID)}
}

func keeperSocket(state, podID string) string {
	return filepath.Join(state, "k", podID[:32])
}

func (r *Runtime) savePod(p *Pod) error             { return r.store.SavePod(p) }
func (r *Runtime) saveContainer(c *Container) error { return r.store.SaveContainer(c) }

// cleanupContext is used for undo steps: they must run even when the
// caller's context is already cancelled.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
