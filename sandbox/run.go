package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/names"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"os"
	"path/filepath"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // lets the cgroup manager apply device rules
	"github.com/opencontainers/runc/libcontainer"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/durable"
)

// runContainer starts the container through its pod's keeper: the keeper
// forks a runner (this binary, runner.Command) that creates the container
// with libcontainer and exits, leaving the init process to the keeper. The
// keeper holds its stdio, writes its log and records its exit, so none of
// that depends on the daemon (docs/design.md).
func (r *Runtime) runContainer(ctx context.Context, c *container, p *Pod) error {
	tBegin := time.Now()
	// The image store may have unmounted the root filesystem when the daemon
	// last shut down. When this process mounted it (CreateContainer), it
	// still is: mounting again would only cost the image store's lock, a
	// read of the mount table and an fsynced rewrite of its mount counts.
	if _, ok := r.mounted.Load(c.ID); !ok {
		rootfs, err := r.createRootfs(ctx, c.ID, c.Image.ID, p.Config)
		if err != nil {
			return fmt.Errorf("mount root filesystem: %w", err)
		}
		if rootfs != c.Rootfs {
			// Created by an older peapod, which bound it elsewhere.
			if err := moveSpecRoot(c, rootfs); err != nil {
				return err
			}
		}
		// The image volumes' binds outlive the daemon, not a reboot.
		if _, err := r.mountImageVolumes(ctx, &c.Container, p.Config); err != nil {
			return imageVolumeError(fmt.Errorf("mount image volumes: %w", err))
		}
		r.mounted.Store(c.ID, true)
	}
	r.fail.Crash("start-container-after-rootfs")
	// The keeper creates the log and its directories beneath the pod's log
	// directory, without following symlinks (sandbox/pause/log.c).
	logDir, logPath, err := hostfs.ContainerLogLocation(p.Config, c.LogPath)
	if err != nil {
		return err
	}
	if logDir != "" {
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return fmt.Errorf("create the pod's log directory: %w", err)
		}
	}
	os.Remove(exitFile(c))
	os.Remove(oomFile(c))
	if restoring, err := runner.HasRestoreImages(c.Bundle); err != nil {
		return err
	} else if restoring {
		// The runner restores from the images without checking them.
		if err := checkRestorePrivileges(&c.Container); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	t0 := time.Now()
	k := r.keeperOf(p)
	startedAt := time.Now().UnixNano() // before: a quick exit is stamped after it
	pid, err := k.Start(ctx, p.KeeperProtocol, keeper.StartRequest{
		ID:        c.ID,
		LogDir:    logDir,
		LogPath:   logPath,
		ExitFile:  exitFile(c),
		TTY:       c.Config.GetTty(),
		Stdin:     c.Config.GetStdin(),
		StdinOnce: c.Config.GetStdinOnce(),
		Argv:      r.runnerArgv(c, p),
	})
	if errors.Is(err, keeper.ErrGone) {
		// A start racing StopPodSandbox (or a keeper that died): the
		// pod, not the runtime, is what failed.
		return fmt.Errorf("the pod is stopped or its keeper died: %w: %w", ErrFailedPrecondition, err)
	}
	if err != nil {
		return err
	}
	tStart := time.Now()
	r.fail.Crash("start-container-after-start")
	r.sealRootfsBind(c, p)
	start, err := proc.StartTime(pid)
	if err != nil {
		start = 0 // exited already: the keeper records it
	}
	r.loadRuntimeHandle(c, p.RuntimeHandler)
	c.PID = pid
	c.PIDStart = start
	c.State = ContainerRunning
	c.StartedAt = startedAt
	r.watchExit(c, k)
	r.log.Debug("start container phases", "container", c.ID, "before_keeper", t0.Sub(tBegin),
		"keeper_start", tStart.Sub(t0), "after_keeper", time.Since(tStart))
	return nil
}

// runnerArgv is what the keeper executes to start c: the runner, which
// creates it with libcontainer or, for a handler of an external OCI
// runtime, through that runtime's create and start.
func (r *Runtime) runnerArgv(c *container, p *Pod) []string {
	if rt := r.ociOf(p.RuntimeHandler); rt != nil {
		return append([]string{runner.Exe()}, runner.ExternalArgs(*rt, c.Bundle, c.ID, r.runnerJoins(p))...)
	}
	return []string{runner.Exe(), runner.Command, libcontainerRoot(r.opts.State), c.Bundle, c.ID, r.runnerJoins(p)}
}

// loadRuntimeHandle keeps what later calls need of a running container:
// libcontainer's handle, or an external runtime's container's cgroups.
func (r *Runtime) loadRuntimeHandle(c *container, podHandler string) {
	if r.ociOf(podHandler) != nil {
		c.ociCgroups = ociCgroupPaths(c)
		return
	}
	if lc, err := r.loadLibcontainer(c); err == nil {
		c.inLibcontainer = true
		r.watchOOM(c, lc)
	}
}

// ociCgroupPaths resolves the spec's cgroupsPath as the runtime did: the
// runner joined the daemon's cgroups before it ran the runtime.
func ociCgroupPaths(c *container) map[string]string {
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil || spec.Linux == nil || spec.Linux.CgroupsPath == "" {
		return nil
	}
	paths, err := cgroups.Paths(spec.Linux.CgroupsPath)
	if err != nil {
		return nil
	}
	return paths
}

// moveSpecRoot points the container's spec at its root filesystem's new
// place.
func moveSpecRoot(c *container, rootfs string) error {
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil {
		return fmt.Errorf("move root filesystem of %s: %w", c.ID, err)
	}
	spec.Root.Path = rootfs
	if err := runner.WriteSpec(c.Bundle, spec); err != nil {
		return fmt.Errorf("move root filesystem of %s: %w", c.ID, err)
	}
	c.Rootfs = rootfs
	return nil
}

// exitFile is where the keeper records the container's exit.
func exitFile(c *container) string { return filepath.Join(c.Bundle, "exit") }

// oomFile records that the OOM eventfd fired while the container ran, for
// an exit recorded after a restart of the daemon, when the cgroup may be
// gone.
func oomFile(c *container) string { return filepath.Join(c.Bundle, "oom") }

// watchExit waits, through the keeper, for the container's exit and
// records it. If the keeper is gone (its pod was killed), the exit file it
// may have written is the last word.
func (r *Runtime) watchExit(c *container, k keeper.Client) {
	c.exited = make(chan struct{})
	go func() {
		ex, err := k.Wait(c.watch, c.ID, func(st keeper.LogState) { r.noteLogState(c, st) })
		if errors.Is(err, context.Canceled) {
			return // the daemon is shutting down; the keeper keeps the exit
		}
		if err != nil {
			if fromFile, ferr := keeper.ReadExitFile(exitFile(c)); ferr == nil {
				ex, err = fromFile, nil
			}
		}
		r.recordExit(c, ex, err)
		r.notifyContainerStopped(c)
		// Not at once: the kubelet's StopPodSandbox (and often
		// RemovePodSandbox) follows StopContainer's reply at once, and an
		// unmount beside it slowed it down (docs/performance.md). A removal
		// or shutdown in the meantime ends the wait: the removal unmounts,
		// the next start releases what is still mounted.
		t := time.NewTimer(releaseRootfsDelay)
		defer t.Stop()
		select {
		case <-t.C:
			r.releaseRootfs(c)
		case <-c.watch.Done():
		}
	}()
}

// releaseRootfsDelay is how long after its exit an exited container's
// root filesystem is unmounted.
const releaseRootfsDelay = time.Second

// releaseRootfsFailpoint holds releaseRootfs before it unmounts (a slow
// containers/storage lock), for tests that the calls after StopContainer
// do not wait for it.
const releaseRootfsFailpoint = "release-rootfs"

// releaseRootfs unmounts an exited container's root filesystem (and the
// host's bind of a user-namespaced one), after its exit is recorded and
// answered: nothing reads an exited container's files but
// RemoveContainer, which removes them mounted or not. The mount would
// otherwise stay until then, and the kubelet keeps exited containers
// for long: thousands of mounts on a busy node, each a line of the mount
// table that every container start reads (twice, in runc's code).
// It holds c.rootfsMu, not c.mu: the kubelet's StopPodSandbox follows
// StopContainer's reply at once and takes c.mu, and waited for this
// unmount (StopPodSandbox 1.6 ms slower, docs/performance.md).
func (r *Runtime) releaseRootfs(c *container) {
	c.mu.Lock()
	exited := c.State == ContainerExited // final: an exited container does not start again
	c.mu.Unlock()
	if !exited {
		return
	}
	c.rootfsMu.Lock()
	defer c.rootfsMu.Unlock()
	if c.rootfsRemoved {
		return
	}
	r.mounted.Delete(c.ID)
	ctx, cancel := cleanupContext()
	defer cancel()
	if err := r.fail.Hold(ctx, releaseRootfsFailpoint); err != nil {
		r.log.Warn("unmount an exited container's root filesystem", "container", c.ID, "err", err)
		return
	}
	if err := hostfs.UnbindRootfs(r.opts.State, c.ID); err != nil {
		r.log.Warn("unbind an exited container's root filesystem", "container", c.ID, "err", err)
		return
	}
	if err := r.opts.Images.UnmountRootfs(ctx, c.ID); err != nil {
		r.log.Warn("unmount an exited container's root filesystem", "container", c.ID, "err", err)
	}
}

// releaseExitedRootfs releases the root filesystems of exited containers
// that are still mounted (recover).
func (r *Runtime) releaseExitedRootfs(list []*container) {
	for _, c := range list {
		if c.Rootfs != "" && hostfs.IsMountPoint(c.Rootfs) {
			r.releaseRootfs(c)
		}
	}
}

// noteLogState records what the keeper reports about the container's log
// writes: a failing write (a full disk) shows in ContainerStatus's message
// and in the daemon's log until writes work again.
func (r *Runtime) noteLogState(c *container, st keeper.LogState) {
	if st.Failing {
		msg := fmt.Sprintf("writing the container log %s fails (%s): its output is dropped until a write works again", c.LogPath, st.Reason)
		c.logError.Store(&msg)
		r.log.Warn("container log write failed; lines are dropped, the container is not blocked",
			"container", c.ID, "log", c.LogPath, "reason", st.Reason, "dropped_lines", st.Dropped)
		return
	}
	c.logError.Store(nil)
	r.log.Info("container log writes work again", "container", c.ID, "log", c.LogPath, "dropped_lines", st.Dropped)
}

// recordExit stores the exit of a container's init process and releases
// its cgroup and libcontainer state.
func (r *Runtime) recordExit(c *container, ex keeper.Exit, werr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.State = ContainerExited
	if werr != nil {
		c.FinishedAt = time.Now().UnixNano()
		c.ExitCode = 255
		c.Reason = "Unknown"
		c.Message = fmt.Sprintf("the pod's keeper could not report the exit: %v", werr)
	} else {
		c.FinishedAt = ex.Finished
		c.ExitCode = ex.Code
		c.Reason = exitReason(c.ExitCode)
		if r.oomKilled(c) {
			c.Reason = "OOMKilled"
		}
	}
	r.destroyLibcontainer(c)
	if err := r.saveContainer(&c.Container); err != nil {
		r.log.Error("save container exit", "container", c.ID, "err", err)
	}
	close(c.exited)
	r.publishContainer(EventStopped, &c.Container)
	r.log.Info("container exited", "pod", r.podLogNameByID(c.PodID), "container", c.Config.GetMetadata().GetName(),
		"container_id", c.ID, "exit_code", c.ExitCode, "reason", c.Reason)
}

// watchOOM has the OOM killer's acts in a container's systemd scope
// watched while it runs: systemd removes the scope's cgroup when it empties,
// before oomKilled could read it. On v1, an eventfd on memory.oom_control
// (the systemd driver with or without a live systemd: the watch is the
// same); on v2, memory.events under a live systemd. Either records what it
// saw in oomFile.
func (r *Runtime) watchOOM(c *container, lc *libcontainer.Container) {
	if r.opts.CgroupDriver != "systemd" {
		return
	}
	st, err := lc.State()
	if err == nil {
		c.oom.Close() // a recovered container's earlier watch, if any
		c.oom, err = cgroups.WatchOOMEvents(st.CgroupPaths, func() { r.noteOOM(c) })
	}
	if err == nil && c.oom == nil && cgroups.SystemdLive() {
		err = cgroups.WatchOOM(st.CgroupPaths, func() { r.noteOOM(c) })
	}
	if err != nil {
		r.log.Warn("watch the container's cgroup for OOM kills", "container", c.ID, "err", err)
	}
}

// noteOOM records durably that the OOM killer acted in the container, so
// that a daemon restarted before the exit still reports it after systemd
// removed the cgroup. Called on the OOM watcher's goroutine.
func (r *Runtime) noteOOM(c *container) {
	r.log.Info("OOM killer acted in the container's cgroup", "container", c.ID)
	if err := durable.WriteFile(oomFile(c), nil, 0o600); err != nil {
		r.log.Warn("record the container's OOM kill", "container", c.ID, "err", err)
	}
}

// oomKilled reports whether the OOM killer acted in the container's cgroup.
// Any kill counts, not only of the init process, as kubelet expects. The
// cgroup's counter decides while the cgroup is there; once systemd removed
// it, what the watch recorded (oomFile across a restart).
func (r *Runtime) oomKilled(c *container) bool {
	// seen: the watch's record, kept across a restart of the daemon.
	seen := func() bool { _, err := os.Stat(oomFile(c)); return err == nil }
	if c.oom != nil {
		killed, gone := c.oom.Killed(2 * time.Second)
		if killed || !gone {
			return killed
		}
		return seen()
	}
	if c.ociCgroups != nil {
		n, err := cgroups.OOMKills(c.ociCgroups)
		return err == nil && n > 0
	}
	lc, err := r.loadLibcontainer(c)
	if err != nil {
		return seen()
	}
	st, err := lc.State()
	if err != nil {
		return seen()
	}
	n, err := cgroups.OOMKills(st.CgroupPaths)
	if n > 0 || seen() {
		return true
	}
	if err != nil {
		r.log.Warn("read OOM kill counter", "container", c.ID, "err", err)
	}
	return false
}

// recoverContainer reconnects a container that was running when the daemon
// stopped: its keeper still holds it, or recorded its exit meanwhile.
func (r *Runtime) recoverContainer(c *container) {
	r.mu.RLock()
	p := r.pods[c.PodID]
	r.mu.RUnlock()
	if ex, err := keeper.ReadExitFile(exitFile(c)); err == nil {
		c.exited = make(chan struct{})
		r.recordExit(c, ex, nil)
		return // recover releases its root filesystem with the other exited
	}
	if p == nil || !proc.Alive(p.PausePID, p.PauseStart) {
		r.markLost(c)
		return
	}
	r.loadRuntimeHandle(c, p.RuntimeHandler)
	r.watchExit(c, r.keeperOf(&p.Pod))
}

// markLost records a container whose keeper is gone without a record of
// its exit (the pod was killed while the daemon was down, or a reboot).
func (r *Runtime) markLost(c *container) {
	c.State = ContainerExited
	c.FinishedAt = time.Now().UnixNano()
	c.ExitCode = 255
	c.Reason = "Unknown"
	c.Message = "the container's pod ended while peapod was not running; its exit code is unknown"
	r.destroyLibcontainer(c)
	if err := r.saveContainer(&c.Container); err != nil {
		r.log.Error("save lost container", "container", c.ID, "err", err)
	}
	c.exited = make(chan struct{})
	close(c.exited)
	r.publishContainer(EventStopped, &c.Container)
}

// podLogNameByID is names.PodLog of a known pod, or "" for one that is
// gone.
func (r *Runtime) podLogNameByID(id string) string {
	r.mu.RLock()
	p := r.pods[id]
	r.mu.RUnlock()
	if p == nil {
		return ""
	}
	return names.PodLog(p.Config)
}
